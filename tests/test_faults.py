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
