"""Small pieces of the training loop: the mask-aware entry count and checkpoint clean-up after a kill."""

import os

import pytest
import torch

from maft_hf.training.checkpoints import remove_stale_temporaries
from maft_hf.training.losses import class_masks_from_labels, mask_aware_entry_count


def test_entry_count_equals_present_classes_times_valid_proposals():
    labels = torch.randint(0, 5, (3, 9, 7))
    labels[0] = 255  # nothing labelled
    labels[1, :, :4] = 255
    valid = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    _, class_valid, _ = class_masks_from_labels(labels, 5)
    expected = (class_valid.sum(1) * valid.sum(1)).sum()
    assert int(mask_aware_entry_count(labels, 5, valid)) == int(expected)
    assert int(mask_aware_entry_count(labels, 5, valid)) > 0
    with pytest.raises(ValueError, match=r"ids \[7\]"):
        mask_aware_entry_count(torch.full((1, 2, 2), 7), 5, valid[:1])


def test_remove_stale_temporaries_restores_a_checkpoint_moved_aside(tmp_path):
    # killed between "move step_4 aside" and "rename the new one in": only .old_step_4 is left
    (tmp_path / ".old_step_4").mkdir()
    (tmp_path / ".old_step_4" / "model.safetensors").write_text("weights")
    # an incomplete save of step 6, and a stale old copy whose step_2 exists
    (tmp_path / ".tmp_step_6").mkdir()
    (tmp_path / "step_2").mkdir()
    (tmp_path / ".old_step_2").mkdir()
    remove_stale_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["step_2", "step_4"]
    assert (tmp_path / "step_4" / "model.safetensors").read_text() == "weights"
