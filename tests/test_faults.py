"""Faults a real user hits that are not covered beside their feature: each gets a clear error, nothing runs silently
wrong. The full table of faults and where each is tested is docs/reliability.md."""

import pytest

from maft_hf.inference.vocabulary import parse_vocabulary_argument


@pytest.mark.parametrize("value", ["classes.csv", "my_classes.txt", "lists/classes"])
def test_a_missing_vocabulary_file_is_an_error_not_a_one_class_vocabulary(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"vocabulary file '{value}' does not exist"):
        parse_vocabulary_argument(value)
    (tmp_path / "lists").mkdir()
    (tmp_path / value).write_text("sky\nroad\n")
    assert parse_vocabulary_argument(value) == ["sky", "road"]


def test_a_single_word_vocabulary_warns(caplog):
    assert parse_vocabulary_argument("sky") == ["sky"]
    assert "single class 'sky'" in caplog.text


class _Accelerator:
    """The part of `accelerate.Accelerator` that `save_checkpoint` uses; `full_after` bytes fill the disk."""

    is_main_process = True

    def __init__(self, full: bool = False):
        self.full = full

    def wait_for_everyone(self):
        pass

    def save_state(self, directory):
        import errno
        import os

        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "model.safetensors"), "wb") as handle:
            handle.write(b"x" * 64)
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_earlier_checkpoints(tmp_path):
    from maft_hf.training.checkpoints import find_latest_checkpoint, load_training_state, save_checkpoint

    first = save_checkpoint(_Accelerator(), tmp_path, 10, {"step": 10})
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(_Accelerator(full=True), tmp_path, 20, {"step": 20})
    assert find_latest_checkpoint(tmp_path) == first and load_training_state(first)["step"] == 10
    assert not (tmp_path / "step_20").exists()
    # The same step saved again over a complete checkpoint: a failure leaves the complete one in place.
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(_Accelerator(full=True), tmp_path, 10, {"step": 10})
    assert load_training_state(first)["step"] == 10


def test_generators_keep_huge_images_at_their_working_resolution(
    tiny_mask2former_dir, tiny_sam_dir, tmp_path, monkeypatch
):
    """Over `FULL_RESOLUTION_PIXELS` a generator returns masks at its working size with `image_size` set (segment()
    upsamples block by block); below it, masks at the image's size as before. The limit is lowered here so that a
    small image counts as huge."""
    import numpy as np
    import torch

    import maft_hf.proposals as proposals
    from maft_hf.proposals import load_proposal_generator
    from maft_hf.proposals.freeseg.testing import build_tiny_freeseg

    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    generator = load_proposal_generator(f"mask2former:{tiny_mask2former_dir}", local_files_only=True)
    (normal,) = generator([image])
    assert normal.image_size is None and tuple(normal.masks.shape[-2:]) == (90, 120)
    monkeypatch.setattr(proposals, "FULL_RESOLUTION_PIXELS", 1000)
    (huge,) = generator([image])
    assert huge.image_size == (90, 120) and huge.masks.shape[-2] * huge.masks.shape[-1] < 90 * 120
    resized = torch.nn.functional.interpolate(huge.masks[None], size=(90, 120), mode="bilinear", align_corners=False)
    assert (resized[0] - normal.masks).abs().mean() < 0.05  # the same masks, at another resolution
    (sam,) = load_proposal_generator(f"sam:{tiny_sam_dir}", local_files_only=True)([image])
    assert sam.image_size == (90, 120) and sam.masks.shape[-2:] != (90, 120)
    freeseg = load_proposal_generator(f"freeseg:{build_tiny_freeseg(tmp_path / 'freeseg')}")
    text = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    (item,) = freeseg([image], class_names=["a", "b", "c"], text_classifier=text)
    assert item.image_size == (90, 120) and item.masks.shape[-2:] != (90, 120)
