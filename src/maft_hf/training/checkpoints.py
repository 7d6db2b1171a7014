"""Checkpoints of a fine-tuning run: atomic saves (`step_<K>` directories), the latest one, clean-up after a kill."""

from __future__ import annotations

import json
import os
import re
import shutil

CHECKPOINT_PREFIX = "step_"
TRAINING_STATE_FILE = "training_state.json"
LOSSES_FILE = "train_losses.json"
RESULTS_FILE = "all_results.json"


def _checkpoint_step(name: str) -> int | None:
    match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", name)
    return int(match.group(1)) if match else None


def find_latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The complete checkpoint `output_dir/step_<K>` (one holding its `training_state.json`) with the largest `K`."""
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        step, path = _checkpoint_step(name), os.path.join(output_dir, name)
        if step is not None and os.path.isfile(os.path.join(path, TRAINING_STATE_FILE)):
            found.append((step, path))
    return max(found)[1] if found else None


def load_training_state(checkpoint_dir: str | os.PathLike) -> dict:
    """The `training_state.json` of a checkpoint (completed steps, loss history, settings)."""
    path = os.path.join(checkpoint_dir, TRAINING_STATE_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"{os.fspath(checkpoint_dir)!r} is not a fine-tuning checkpoint: it has no {TRAINING_STATE_FILE} "
            "(checkpoints are the step_<K> directories that --checkpointing_steps writes)."
        )
    with open(path) as f:
        return json.load(f)


def write_json(path: str | os.PathLike, content) -> None:
    """Write `content` as JSON to `path` atomically (a flushed temporary file renamed into place)."""
    temporary = f"{os.fspath(path)}.tmp"
    with open(temporary, "w") as f:
        json.dump(content, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, training_state: dict) -> str:
    """Write `accelerator.save_state` and `training_state.json` to `output_dir/step_<step>` atomically; call it on
    every process. Everything goes to `.tmp_step_<step>` first, flushed, then renamed (`os.replace`): a run killed
    at any moment leaves the complete checkpoint or none. Returns the checkpoint directory."""
    output_dir = os.fspath(output_dir)
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f".tmp_{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(os.path.join(temporary, TRAINING_STATE_FILE), training_state)
        for root, _, files in os.walk(temporary):  # durable across power loss
            for name in files:
                with open(os.path.join(root, name), "rb") as handle:
                    os.fsync(handle.fileno())
            _fsync(root)
        stale = None
        if os.path.exists(final):  # a re-run of the same step: move the old one aside, then swap
            stale = os.path.join(output_dir, f".old_{CHECKPOINT_PREFIX}{step}")
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
        os.replace(temporary, final)
        _fsync(output_dir)  # the rename itself
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> list[str]:
    """Delete all but the `keep` newest `step_<K>` checkpoints (None or 0 keeps all); returns the deleted paths."""
    if not keep or keep < 1 or not os.path.isdir(output_dir):
        return []
    steps = sorted((s, n) for n in os.listdir(output_dir) if (s := _checkpoint_step(n)) is not None)
    removed = [os.path.join(output_dir, name) for _, name in steps[:-keep]]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def remove_stale_temporaries(output_dir: str | os.PathLike) -> None:
    """After a killed save: remove `.tmp_step_*`, and put a `.old_step_K` back as `step_K` when the run died between
    moving the old copy aside and renaming the new one in (else remove it)."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(f".old_{CHECKPOINT_PREFIX}"):
            final = os.path.join(output_dir, name[len(".old_") :])
            if os.path.exists(final):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, final)
        elif name.startswith(f".tmp_{CHECKPOINT_PREFIX}"):
            shutil.rmtree(path, ignore_errors=True)
