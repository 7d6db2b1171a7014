"""Checkpoints of a fine-tuning run: atomic saves (`step_<K>` directories), the latest one, clean-up after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

CHECKPOINT_PREFIX = "step_"
TRAINING_STATE_FILE = "training_state.json"
LOSSES_FILE = "train_losses.json"
RESULTS_FILE = "all_results.json"


def _step_directories(output_dir: str | os.PathLike) -> list[str]:
    """The `output_dir/step_<K>` directories, complete or not, by increasing `K`."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    steps = sorted(
        (int(match[1]), name) for name in names if (match := re.fullmatch(CHECKPOINT_PREFIX + r"(\d+)", name))
    )
    return [os.path.join(output_dir, name) for _, name in steps]


def complete_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """The complete checkpoints `output_dir/step_<K>` (holding their `training_state.json`), by increasing `K`."""
    return [path for path in _step_directories(output_dir) if os.path.isfile(os.path.join(path, TRAINING_STATE_FILE))]


def find_latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The complete checkpoint with the largest step, or None."""
    return (complete_checkpoints(output_dir) or [None])[-1]


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


def _fsync(path: str) -> None:  # a file, or a directory's entries
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, training_state: dict) -> str:
    """Write `accelerator.save_state` and `training_state.json` to `output_dir/step_<step>` (returned) on every
    process, atomically: written to `.tmp_step_<step>`, flushed, then renamed, so a kill leaves all or nothing."""
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
            for path in [root, *(os.path.join(root, name) for name in files)]:
                _fsync(path)
        stale = os.path.join(output_dir, f".old_{CHECKPOINT_PREFIX}{step}")
        shutil.rmtree(stale, ignore_errors=True)
        if os.path.exists(final):  # a re-run of the same step: move the old one aside, then swap
            os.replace(final, stale)
        os.replace(temporary, final)
        _fsync(output_dir)  # the rename itself
        shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> list[str]:
    """Delete all but the `keep` newest `step_<K>` checkpoints (None or 0 keeps all); returns the deleted paths."""
    removed = _step_directories(output_dir)[:-keep] if keep and keep > 0 else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def remove_stale_temporaries(output_dir: str | os.PathLike) -> None:
    """After a killed save: remove `.tmp_step_*`, and put a `.old_step_K` back as `step_K` when the run died between
    moving the old copy aside and renaming the new one in (else remove it)."""
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        path, final = os.path.join(output_dir, name), os.path.join(output_dir, name.removeprefix(".old_"))
        if name.startswith(f".old_{CHECKPOINT_PREFIX}") and not os.path.exists(final):
            os.replace(path, final)
        elif name.startswith((f".old_{CHECKPOINT_PREFIX}", f".tmp_{CHECKPOINT_PREFIX}")):
            shutil.rmtree(path, ignore_errors=True)


RUN_FILE = "run.json"
RESULT_SETTINGS = tuple(  # fine-tuning flags that change the trained weights
    """
    model_name_or_path freeze_policy dataset_name dataset_config_name dataset_path train_split max_train_samples
    image_column label_column vocabulary label_mapping ignore_index zero_shot crop_size short_side max_size
    flip_prob color_jitter proposal_generator proposal_column num_proposals learning_rate weight_decay max_grad_norm
    max_train_steps lr_power lr_warmup_steps distillation_weight mixed_precision seed loss_normalization streaming
    global_batch_size
    """.split()
)


def run_settings(args) -> dict:
    """The result-changing settings of a run (`RESULT_SETTINGS` of the fine-tuning arguments, JSON values)."""
    values = vars(args) if not isinstance(args, dict) else args
    settings = {name: values.get(name) for name in RESULT_SETTINGS}
    if values.get("zero_shot"):
        settings["unseen_classes"] = values.get("unseen_classes")
    if values.get("loss_normalization") == "per_device":  # the per-device means depend on the split of the batch
        settings["per_device_train_batch_size"] = values.get("per_device_train_batch_size")
    return json.loads(json.dumps(settings))


def run_id(settings: dict) -> str:
    """A short hash identifying the run of `settings`."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def changed_settings(old: dict | None, new: dict) -> list[str]:
    """`"name: old -> new"` for every setting that differs (one line when `old` recorded none)."""
    if old is None:
        return ["the checkpoint records no settings (written before runs recorded them)"]
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted({*old, *new}) if old.get(key) != new.get(key)
    ]


def run_artifacts(output_dir: str | os.PathLike) -> list[str]:
    """Names in `output_dir` that a run wrote and a new run would lose: checkpoints, results, the final model."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    outputs = (LOSSES_FILE, RESULTS_FILE, "model.safetensors")
    return sorted(n for n in names if n in outputs or n.startswith((CHECKPOINT_PREFIX, ".tmp_", ".old_")))


def plan_run(output_dir, settings: dict, resume: str | None, allow_changed_settings: bool = False) -> str | None:
    """The checkpoint this run resumes from (None: step 0), or a `ValueError` when it would lose or alter another
    run's work: without `resume`, a folder holding checkpoints or results; a checkpoint with other settings (unless
    `allow_changed_settings`). `resume="latest"`: the newest checkpoint of this run, else of any run."""
    path, identity = resume, run_id(settings)
    if resume == "latest":
        complete = complete_checkpoints(output_dir)
        mine = [p for p in complete if load_training_state(p).get("run_id") == identity]
        path = (mine or complete or [None])[-1]  # another run's newest is refused below, naming the differences
    if path is None:
        held = run_artifacts(output_dir)
        if held:
            raise ValueError(
                f"--output_dir {os.fspath(output_dir)!r} holds another run's checkpoints or results ({', '.join(held[:6])}"
                f"{', ...' if len(held) > 6 else ''}); a new run there would lose or mix with them. Pass "
                "--resume_from_checkpoint latest to continue that run, --overwrite_output_dir to clear the folder, "
                "or choose another --output_dir."
            )
        return None
    state = load_training_state(path)
    differences = [] if state.get("run_id") == identity else changed_settings(state.get("settings"), settings)
    if differences and not allow_changed_settings:
        raise ValueError(
            f"Checkpoint {os.fspath(path)!r} belongs to a run with other settings ({'; '.join(differences)}): resuming "
            "it with these would not continue that run. Use the checkpoint's settings, pass --allow_changed_settings "
            "to resume with the new ones anyway, or start a new run (--overwrite_output_dir or another --output_dir)."
        )
    return path


def clear_run_folder(output_dir: str | os.PathLike) -> None:
    """Delete everything in `output_dir` when it holds a run (`--overwrite_output_dir`)."""
    if run_artifacts(output_dir) or os.path.exists(os.path.join(output_dir, RUN_FILE)):
        for name in os.listdir(output_dir):
            path = os.path.join(output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
