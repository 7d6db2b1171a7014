"""The pipeline travels with the checkpoint; batched pipeline calls; push_to_hub uploads the maft_hf model card."""

import json
import os
import subprocess
import sys

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoProcessor, pipeline

from maft_hf import MaskAwareCLIPModel
from maft_hf.inference.pipeline import segment
from maft_hf.inference.vocabulary import load_prompt_templates
from maft_hf.model import pipeline_maft
from maft_hf.proposals import UserMaskProposals
from maft_hf.testing import build_tiny_checkpoint

NAMES = ["sky", "grass", "car"]


def random_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def label_map(height, width):
    """Three horizontal bands: ids 0, 1, 2."""
    return (np.arange(height)[:, None] * 3 // height).repeat(width, axis=1).astype(np.int64)


@pytest.fixture
def checkpoint(tmp_path):
    return build_tiny_checkpoint(tmp_path / "tiny-maft", initializer_range=0.2)


def test_checkpoint_records_and_carries_its_pipeline(checkpoint):
    with open(os.path.join(checkpoint, "config.json")) as f:
        config = json.load(f)
    assert config["custom_pipelines"] == {
        "image-segmentation": {
            "impl": "pipeline_maft.OpenVocabularySegmentationPipeline",
            "pt": ["AutoModel"],
            "type": "multimodal",
        }
    }
    for name in ("pipeline_maft.py", "modeling_maft.py", "processing_maft.py", "configuration_maft.py", "hub_maft.py"):
        assert os.path.isfile(os.path.join(checkpoint, name)), name
    assert pipeline_maft.PROMPT_TEMPLATES == load_prompt_templates()  # the shipped copy equals the package's


@pytest.mark.slow
def test_pipeline_runs_where_maft_hf_cannot_be_imported(checkpoint, tmp_path):
    image = random_image(30, 44)
    image.save(tmp_path / "street.png")
    np.save(tmp_path / "labels.npy", label_map(30, 44))
    code = f"""
import importlib.abc, sys
class NoMaftHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "maft_hf":
            raise ImportError("maft_hf is hidden in this test")
sys.meta_path.insert(0, NoMaftHf())
import numpy as np, torch
from transformers import pipeline
pipe = pipeline(model={checkpoint!r}, trust_remote_code=True, device="cpu")
out = pipe("street.png", candidate_labels={NAMES!r}, proposal_masks=np.load("labels.npy"))
assert not any(name.startswith("maft_hf") for name in sys.modules), "maft_hf was imported"
print(type(pipe).__name__, pipe.task)
torch.save({{"segmentation": out["segmentation"], "scores": out["scores"]}}, "remote.pt")
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["OpenVocabularySegmentationPipeline", "image-segmentation"]
    remote = torch.load(tmp_path / "remote.pt", weights_only=True)

    model = MaskAwareCLIPModel.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    (expected,) = segment(image, NAMES, model, processor, UserMaskProposals(label_map(30, 44)))
    assert len(expected["segmentation"].unique()) > 1  # a map worth comparing
    assert torch.equal(remote["segmentation"], expected["segmentation"])
    torch.testing.assert_close(remote["scores"], expected["scores"], atol=1e-5, rtol=1e-4)


def bands(images):
    """A proposal generator: 2 or 3 horizontal bands per image (by width parity), so batches mix proposal counts."""
    return [label_map(im.height, im.width) * (2 + im.width % 2) // 3 for im in images]


@pytest.mark.parametrize("task", ["open-vocabulary-segmentation", "image-segmentation"])
def test_batched_calls_equal_unbatched(checkpoint, task):
    options = {"trust_remote_code": True} if task == "image-segmentation" else {}  # the checkpoint's own code
    pipe = pipeline(task, model=checkpoint, device="cpu", proposal_generator=bands, **options)
    assert type(pipe).__module__.startswith("maft_hf") == (task == "open-vocabulary-segmentation")
    images = [random_image(30, 44), random_image(17, 51, seed=1), random_image(25, 25, seed=2)]
    one_by_one = [pipe(image, candidate_labels=NAMES) for image in images]
    batched = pipe(images, candidate_labels=NAMES, batch_size=2)  # batches of 2 and 1
    assert [out["scores"].shape[0] for out in batched] == [2, 3, 3]
    for got, want, image in zip(batched, one_by_one, images):
        assert got["segmentation"].shape == (image.height, image.width) and got["class_names"] == NAMES
        assert torch.equal(got["segmentation"], want["segmentation"])
        torch.testing.assert_close(got["scores"], want["scores"], atol=1e-5, rtol=1e-4)
    assert len(torch.cat([out["segmentation"].flatten() for out in batched]).unique()) > 1


def test_push_to_hub_uploads_the_maft_model_card(checkpoint, monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["repo"] = repo_id
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, commit_message=None, **kwargs):
        calls["files"] = {op.path_in_repo: op.path_or_fileobj for op in operations}
        calls["card"] = ModelCard.load(calls["files"]["README.md"])
        calls["config"] = json.load(open(calls["files"]["config.json"]))
        return commit_message

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    monkeypatch.setattr(huggingface_hub.HfApi, "file_exists", lambda self, *args, **kwargs: False)
    model = MaskAwareCLIPModel.from_pretrained(checkpoint)
    assert model.push_to_hub("me/tiny-maft", token="hf_fake", tags=["demo"]) == "Upload MAFT model"
    assert calls["repo"] == "me/tiny-maft"
    assert {"model.safetensors", "config.json", "pipeline_maft.py", "README.md"} <= set(calls["files"])
    card = calls["card"]
    assert card.data.pipeline_tag == "image-segmentation" and card.data.library_name == "transformers"
    assert "maft" in card.data.tags and "demo" in card.data.tags
    assert (
        "# tiny-maft" in card.text and "from layer 2 of 4" in card.text and "automatically generated" not in card.text
    )
    assert f"| Parameters | {sum(p.numel() for p in model.parameters()):,} |" in card.text
    assert "image-segmentation" in calls["config"]["custom_pipelines"]

    monkeypatch.setattr(huggingface_hub.HfApi, "file_exists", lambda self, *args, **kwargs: True)
    monkeypatch.setattr(
        "transformers.utils.hub.ModelCard.load", lambda *args, **kwargs: ModelCard("---\nlicense: mit\n---\nTheirs")
    )
    model.push_to_hub("me/tiny-maft")
    assert calls["card"].text.strip() == "Theirs"  # an existing card is kept
