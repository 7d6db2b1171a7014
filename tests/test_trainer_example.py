"""examples/trainer_finetune.py: transformers' Trainer fine-tunes MaskAwareCLIPModel through its `loss` output."""

import runpy
import sys
from pathlib import Path

import pytest
import torch

from maft_hf import MaskAwareCLIPModel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trainer_finetune.py"


@pytest.mark.slow
def test_trainer_example_trains_the_image_encoder_and_lowers_the_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(tmp_path / "run"), "8"])
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    start = MaskAwareCLIPModel.from_pretrained(tmp_path / "run" / "start").eval()
    trained = MaskAwareCLIPModel.from_pretrained(tmp_path / "run" / "model").eval()
    before, after = start.state_dict(), trained.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vision_model.encoder"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("text_model."))  # frozen

    # the objective on the images it trained on went down
    batch = namespace["collate"]([namespace["dataset"][i] for i in range(8)])
    with torch.no_grad():
        loss_before, loss_after = start(**batch).loss, trained(**batch).loss
    assert torch.isfinite(loss_before) and loss_after < loss_before
