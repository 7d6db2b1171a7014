"""Mask-aware fine-tuning: the pieces of `maft_hf.training` and `scripts/finetune.py` end to end.

End-to-end runs use a tiny random MAFT checkpoint, a tiny random Mask2Former (or grid proposals) and the synthetic
dataset (64 px images, 64 px crops, 32 px CLIP input), all saved to temporary directories and loaded by path offline.
`accelerate launch` runs as a subprocess (CPU; two processes with `--multi_gpu` and gloo); the Hub and bad-input
tests call the script's `main(argv)` in-process.

Stated tolerances:
* 1 process x batch 4 vs 2 processes x batch 2 (same global batch 4): per-step logged losses within 1e-5 absolute
  (losses are ~0.1; float32 reduction order differs), final weights within 5e-4 absolute after 40 AdamW steps at lr
  1e-3 (Adam's normalisation amplifies last-bit gradient differences of near-zero gradients);
* killed at a checkpoint and resumed vs uninterrupted (same processes and threads): final weights and the loss of
  every resumed step within 1e-6 absolute (bit-identical in practice).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from reference_augmentation import ColorAugSSD, opencv_bgr2hsv, opencv_hsv2bgr, train_transform
from safetensors.torch import load_file

from maft_hf.data import save_synthetic_dataset
from maft_hf.data.labels import coco_stuff_lut
from maft_hf.testing import build_tiny_checkpoint, build_tiny_mask2former, build_tiny_tokenizer, tiny_maft_config
from maft_hf.training import (
    AugmentationConfig,
    LabelConverter,
    MaskAwareStudent,
    StepBatchSampler,
    TrainingExamples,
    apply_augmentation,
    apply_color_jitter,
    average_ranks,
    collate,
    derived_seed,
    find_latest_checkpoint,
    load_model_and_processor,
    make_teacher,
    poly_lr_scheduler,
    prepare_batch,
    rank_correlation_eval,
    resolve_vocabulary,
    sample_augmentation,
    sample_color_jitter,
    save_checkpoint,
    spearman_correlation,
    training_step,
    validate_training_dataset,
    write_model_card,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "finetune.py"
STEPS = 40
CHECKPOINT_EVERY = 5
LOSS_TOLERANCE = 1e-5  # 1 vs 2 processes, per step
WEIGHT_TOLERANCE_DDP = 5e-4  # 1 vs 2 processes, after STEPS steps
RESUME_TOLERANCE = 1e-6  # killed + resumed vs uninterrupted


def _load_script():
    return importlib.import_module("maft_hf.cli.finetune")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune-assets")
    save_synthetic_dataset(root / "synthetic", num_train=32, num_test=8, image_size=64, seed=0)
    build_tiny_checkpoint(root / "tiny-maft")
    build_tiny_mask2former(root / "mask2former")
    return SimpleNamespace(
        root=root, dataset=str(root / "synthetic"), model=str(root / "tiny-maft"), mask2former=str(root / "mask2former")
    )


@pytest.fixture
def reset_accelerate():
    """In-process runs create an Accelerator; drop its singleton state afterwards."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _script_args(assets, output_dir, *extra, proposals=None):
    return [
        "--cpu", "--model_name_or_path", assets.model, "--dataset_path", assets.dataset,
        "--proposal_generator", proposals or f"mask2former:{assets.mask2former}",
        "--crop_size", "64", "--short_side", "64", "--learning_rate", "1e-3", "--seed", "0",
        "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_command(script_args, num_processes=1):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_processes", str(num_processes)]  # fmt: skip
    if num_processes > 1:  # `--cpu --num_processes 2` would silently start one process (DESIGN.md section 4)
        launcher += ["--multi_gpu", "--main_process_port", str(_free_port())]
    else:
        launcher += ["--cpu"]
    return launcher + [str(SCRIPT), "--offline", *script_args]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _launch(script_args, num_processes=1, timeout=300):
    result = subprocess.run(
        _launch_command(script_args, num_processes), env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"finetune.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def _losses(output_dir):
    return json.loads((Path(output_dir) / "train_losses.json").read_text())


def _weights(output_dir):
    return load_file(str(Path(output_dir) / "model.safetensors"))


@pytest.fixture(scope="module")
def reference_run(assets, tmp_path_factory):
    """One uninterrupted run: 1 process, per-device batch 4, Mask2Former proposals, a checkpoint every 5 steps."""
    output = tmp_path_factory.mktemp("run-1proc") / "out"
    result = _launch(
        _script_args(assets, output, "--per_device_train_batch_size", "4", "--max_train_steps", str(STEPS),
                     "--checkpointing_steps", str(CHECKPOINT_EVERY))
    )  # fmt: skip
    return SimpleNamespace(output=output, log=result.stdout + result.stderr)


# ---------------------------------------------------------------------------------------------------------------
# (a) accelerate launch, 1 process: a loadable checkpoint and processor
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_launch_writes_loadable_checkpoint_and_processor(assets, reference_run):
    from transformers import AutoModel, AutoProcessor

    from maft_hf import MAFTProcessor, MaskAwareCLIPModel
    from maft_hf.training.freezing import is_trainable

    out = reference_run.output
    model = AutoModel.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(model, MaskAwareCLIPModel) and isinstance(processor, MAFTProcessor)
    assert processor.image_processor.size == model.config.vision_config.input_image_size == 32
    assert processor.tokenizer("a photo of a car.")["input_ids"][0] == 0
    start, final = _weights(assets.model), _weights(out)
    moved = {name for name in start if not torch.equal(start[name], final[name])}
    trainable = {name for name in start if is_trainable(name, "released")}
    assert moved and moved <= trainable  # only the released parameter set changed ...
    assert all(torch.equal(start[n], final[n]) for n in start if n.startswith(("text_model.", "text_projection")))
    assert len(moved) > len(trainable) // 2  # ... and most of it did
    losses = _losses(out)
    assert [r["step"] for r in losses] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r["loss"]) and r["distillation_loss"] is not None for r in losses)
    assert losses[0]["learning_rate"] == pytest.approx(1e-3) and losses[-1]["learning_rate"] < 1e-4
    checkpoints = sorted(p.name for p in out.iterdir() if p.name.startswith("step_"))
    assert checkpoints == sorted(f"step_{k}" for k in range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY))
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    assert (out / "README.md").read_text().startswith("---")
    assert json.loads((out / "all_results.json").read_text())["num_processes"] == 1


# ---------------------------------------------------------------------------------------------------------------
# (c) 2 processes (gloo) vs 1 process, same global batch
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_match_one_process(assets, reference_run, tmp_path):
    out = tmp_path / "out"
    _launch(
        _script_args(assets, out, "--per_device_train_batch_size", "2", "--max_train_steps", str(STEPS)),
        num_processes=2,
    )
    assert json.loads((out / "all_results.json").read_text())["num_processes"] == 2
    one = np.array([r["loss"] for r in _losses(reference_run.output)])
    two = np.array([r["loss"] for r in _losses(out)])
    assert one.shape == two.shape == (STEPS,)
    np.testing.assert_allclose(two, one, rtol=0, atol=LOSS_TOLERANCE)
    assert np.std(one) > 100 * LOSS_TOLERANCE  # the curve varies far more than the tolerance: the test can tell
    one_w, two_w = _weights(reference_run.output), _weights(out)
    assert max((one_w[k] - two_w[k]).abs().max().item() for k in one_w) < WEIGHT_TOLERANCE_DDP


# ---------------------------------------------------------------------------------------------------------------
# (d) SIGKILL after a checkpoint, resume from "latest", same final weights
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_and_resume_reaches_the_same_weights(assets, reference_run, tmp_path):
    out = tmp_path / "out"
    args = _script_args(assets, out, "--per_device_train_batch_size", "4", "--max_train_steps", str(STEPS),
                        "--checkpointing_steps", str(CHECKPOINT_EVERY))  # fmt: skip
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            _launch_command(args), env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.time() + 240
            while find_latest_checkpoint(out) is None:
                assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.time() < deadline, "no checkpoint was written in time"
                time.sleep(0.01)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and its worker: our own process group
            process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = int(Path(find_latest_checkpoint(out)).name.split("_")[1])
    assert not (out / "train_losses.json").exists() and not (out / "model.safetensors").exists()
    assert CHECKPOINT_EVERY <= killed_at < STEPS

    result = _launch([*args, "--resume_from_checkpoint", "latest"])
    resumed_at = int(result.stderr.split("Resumed from")[1].split("at step")[1].split(".")[0])
    assert resumed_at >= killed_at
    reference, resumed = _losses(reference_run.output), _losses(out)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        [r["loss"] for r in resumed[resumed_at:]],
        [r["loss"] for r in reference[resumed_at:]],
        rtol=0,
        atol=RESUME_TOLERANCE,
    )
    final, expected = _weights(out), _weights(reference_run.output)
    assert max((final[k] - expected[k]).abs().max().item() for k in expected) <= RESUME_TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# (b) a short run learns: held-out mask-aware loss falls, rank correlation rises
# ---------------------------------------------------------------------------------------------------------------


def test_short_run_learns(assets, tmp_path, reset_accelerate):
    out = tmp_path / "out"
    metrics = _load_script().main(
        _script_args(assets, out, "--per_device_train_batch_size", "4", "--max_train_steps", "40",
                     "--eval_split", "test", "--with_tracking", proposals="grid:4")
    )  # fmt: skip
    assert metrics["rank_correlation_final"] > metrics["rank_correlation_start"] + 0.1
    assert metrics["eval_mask_aware_loss_final"] < metrics["eval_mask_aware_loss_start"]
    train = [r["mask_aware_loss"] for r in _losses(out)]
    assert np.mean(train[-10:]) < np.mean(train[:10])
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # --with_tracking wrote TensorBoard events


def test_gradient_accumulation_matches_the_full_batch(assets, tmp_path, reset_accelerate):
    script = _load_script()
    runs = {}
    for name, extra in (
        ("full", ["--per_device_train_batch_size", "4"]),
        ("accumulated", ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"]),
    ):
        script.main(_script_args(assets, tmp_path / name, "--max_train_steps", "6", *extra, proposals="grid:3"))
        runs[name] = [r["loss"] for r in _losses(tmp_path / name)]
    np.testing.assert_allclose(runs["accumulated"], runs["full"], rtol=0, atol=LOSS_TOLERANCE)


def test_zero_shot_run_with_a_precomputed_proposal_column(assets, tmp_path, reset_accelerate):
    from datasets import Array3D, load_from_disk

    from maft_hf.data import SYNTHETIC_CLASS_NAMES

    data = load_from_disk(assets.dataset)
    features = data["train"].features.copy()
    features["proposals"] = Array3D((len(SYNTHETIC_CLASS_NAMES), 64, 64), "uint8")

    def add_oracle_proposals(example):  # one mask per class of the label map (empty masks for absent classes)
        label = np.array(example["label"])
        return {"proposals": np.stack([label == c for c in range(len(SYNTHETIC_CLASS_NAMES))]).astype(np.uint8)}

    data = data.map(add_oracle_proposals, features=features)
    data.save_to_disk(tmp_path / "with-proposals")
    out = tmp_path / "out"
    args = _script_args(assets, out, "--per_device_train_batch_size", "2", "--max_train_steps", "3", "--zero_shot",
                        "--unseen_classes", "person,car", "--eval_split", "test")  # fmt: skip
    args[args.index("--dataset_path") + 1] = str(tmp_path / "with-proposals")
    position = args.index("--proposal_generator")
    args[position : position + 2] = ["--proposal_column", "proposals"]
    metrics = _load_script().main(args)
    assert np.isfinite(metrics["rank_correlation_start"]) and len(_losses(out)) == 3
    card = (out / "README.md").read_text()
    assert "6 classes, zero-shot" in card  # person and car left out of the training vocabulary


# ---------------------------------------------------------------------------------------------------------------
# (e) --push_to_hub against a local fake of the Hub API
# ---------------------------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_model_processor_and_card(assets, tmp_path, monkeypatch, reset_accelerate):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    remote, calls = tmp_path / "fake-hub", []

    def create_repo(self, repo_id, *, token=None, private=False, exist_ok=False, **kwargs):
        calls.append(("create_repo", repo_id, token, private, exist_ok))
        (remote / repo_id).mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, allow_patterns=None, token=None, **kwargs):
        calls.append(("upload_folder", repo_id, token))
        files = [str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            target = remote / repo_id / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((Path(folder_path) / name).read_bytes())
        return SimpleNamespace(commit_url=f"fake://{repo_id}")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    _load_script().main(
        _script_args(assets, out, "--per_device_train_batch_size", "2", "--max_train_steps", "2",
                     "--checkpointing_steps", "1", "--push_to_hub", "--hub_model_id", "me/maft-tiny",
                     "--hub_token", "hf_fake", proposals="grid:2")
    )  # fmt: skip
    assert calls[0] == ("create_repo", "me/maft-tiny", "hf_fake", False, True)
    assert calls[1] == ("upload_folder", "me/maft-tiny", "hf_fake")
    uploaded = {str(p.relative_to(remote / "me/maft-tiny")) for p in (remote / "me/maft-tiny").rglob("*")}
    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "README.md"):
        assert name in uploaded, f"{name} not uploaded: {sorted(uploaded)}"
    assert not [n for n in uploaded if n.startswith(("step_", ".tmp"))]  # checkpoints stay local
    card = (remote / "me/maft-tiny" / "README.md").read_text()
    assert "library_name: transformers" in card and "me/maft-tiny" in card and "maft" in card
    from transformers import AutoModel, AutoProcessor

    assert type(AutoModel.from_pretrained(remote / "me/maft-tiny")).__name__ == "MaskAwareCLIPModel"
    assert type(AutoProcessor.from_pretrained(remote / "me/maft-tiny")).__name__ == "MAFTProcessor"


# ---------------------------------------------------------------------------------------------------------------
# (f) bad input: a clear error before training starts
# ---------------------------------------------------------------------------------------------------------------


def _save_dict(path, splits):
    from datasets import Dataset, DatasetDict, Features, Image

    features = Features({"image": Image(), "label": Image()})
    DatasetDict({name: Dataset.from_dict(rows, features=features) for name, rows in splits.items()}).save_to_disk(path)
    return str(path)


def _pil(array):
    from PIL import Image

    return Image.fromarray(np.asarray(array, dtype=np.uint8))


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("missing column", ["--label_column", "segmentation"], "no column --label_column 'segmentation'"),
        ("missing split", ["--train_split", "training"], "no split 'training'; available splits: \\['train', 'test"),
        ("ids beyond vocabulary", ["--vocabulary", "sky,grass,water"], "Label ids must lie in \\[0, 2\\]"),
        ("unknown unseen class", ["--zero_shot", "--unseen_classes", "cat"], "Unseen classes \\['cat'\\]"),
        ("size mismatch", [], "the image is 32x32 \\(HxW\\) but its label map is 32x24"),
        ("empty split", [], "Split 'train' is empty"),
        ("no vocabulary", [], "No vocabulary"),
    ],
)
def test_bad_input_fails_before_training(assets, tmp_path, case, extra, message, reset_accelerate):
    dataset = assets.dataset
    image = _pil(np.zeros((32, 32, 3)))
    if case == "size mismatch":
        dataset = _save_dict(
            tmp_path / "data",
            {"train": {"image": [image] * 2, "label": [_pil(np.zeros((32, 32))), _pil(np.zeros((32, 24)))]}},
        )
        extra = ["--vocabulary", "a,b"]
    elif case == "empty split":  # datasets cannot save/load an empty split; an empty selection is one
        extra = ["--max_train_samples", "0"]
    out = tmp_path / "out"
    args = _script_args(assets, out, "--max_train_steps", "1", *extra, proposals="grid:2")
    args[args.index("--dataset_path") + 1] = dataset
    if case == "no vocabulary":  # parquet through datasets.load_dataset keeps the features, not our class names
        from datasets import load_from_disk

        (tmp_path / "parquet" / "data").mkdir(parents=True)
        parquet = tmp_path / "parquet" / "data" / "train-00000-of-00001.parquet"
        load_from_disk(assets.dataset)["train"].to_parquet(parquet)
        position = args.index("--dataset_path")
        args[position : position + 2] = ["--dataset_name", str(tmp_path / "parquet")]
    with pytest.raises(ValueError, match=message):
        _load_script().main(args)
    assert not out.exists() or not any(out.iterdir())  # nothing trained, nothing written


# ---------------------------------------------------------------------------------------------------------------
# Loss normalisation: global (default) vs per device (the release)
# ---------------------------------------------------------------------------------------------------------------

CLASS_COUNTS = (1, 2, 6, 7)  # classes in the images at stream positions 0..3


@pytest.fixture(scope="module")
def class_count_data(tmp_path_factory, assets):
    """4 images of 32 px whose labels hold 1, 2, 6 and 7 of 8 classes, stored so that stream positions 0..3 (the
    first step's global batch at seed 0) are those images in this order; and each image's (sum, count) of the
    mask-aware loss with the starting model, grid:2 proposals, as a run computes them."""
    from maft_hf.inference.semantic_map import classify_proposals
    from maft_hf.inference.text_classifier import build_text_classifier
    from maft_hf.proposals.grid import GridProposals
    from maft_hf.training import mask_aware_loss_sum

    order = [StepBatchSampler(4, 2, 1).index_at(position) for position in range(4)]
    generator = np.random.default_rng(0)
    images, labels = [None] * 4, [None] * 4
    for position, classes in enumerate(CLASS_COUNTS):
        labels[order[position]] = np.repeat(np.arange(32)[None] * classes // 32, 32, 0)  # vertical stripes
        images[order[position]] = generator.integers(0, 256, (32, 32, 3))
    root = tmp_path_factory.mktemp("class-counts")
    path = _save_dict(root / "data", {"train": {"image": list(map(_pil, images)), "label": list(map(_pil, labels))}})
    model, processor = load_model_and_processor(assets.model)
    vocabulary = [f"class{c}" for c in range(8)]
    classifier = build_text_classifier(model, processor.tokenizer, vocabulary)
    terms = []
    with torch.no_grad():
        for position in range(4):
            image = torch.from_numpy(images[order[position]].astype(np.uint8)).permute(2, 0, 1)
            masks = GridProposals(2)([image])[0].masks[None].float()
            pixel_values = torch.nn.functional.interpolate(
                (image[None].float() / 255 - torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1))
                / torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1),
                size=(32, 32), mode="bilinear", align_corners=False,
            )  # fmt: skip
            logits = classify_proposals(model, pixel_values, masks, classifier)
            label = torch.from_numpy(labels[order[position]])[None]
            total, count = mask_aware_loss_sum(logits.float(), masks, label)
            terms.append((float(total), int(count)))
    assert [count for _, count in terms] == [4 * c for c in CLASS_COUNTS]
    return SimpleNamespace(path=path, vocabulary=",".join(vocabulary), terms=terms)


def _normalisation_args(assets, class_count_data, output, *extra):
    args = _script_args(assets, output, "--max_train_steps", "1", "--per_device_train_batch_size", "2",
                        "--crop_size", "32", "--short_side", "32", "--flip_prob", "0", "--distillation_weight", "0",
                        "--vocabulary", class_count_data.vocabulary, *extra, proposals="grid:2")  # fmt: skip
    args[args.index("--dataset_path") + 1] = class_count_data.path
    return args


def _by_hand(terms):
    """Global mean over all entries, and the mean of the two halves' means (positions 0-1 and 2-3)."""
    (s0, c0), (s1, c1), (s2, c2), (s3, c3) = terms
    return (s0 + s1 + s2 + s3) / (c0 + c1 + c2 + c3), ((s0 + s1) / (c0 + c1) + (s2 + s3) / (c2 + c3)) / 2


def test_per_device_normalisation_averages_micro_batch_means(assets, class_count_data, tmp_path, reset_accelerate):
    global_mean, mean_of_means = _by_hand(class_count_data.terms)
    assert abs(global_mean - mean_of_means) > 50 * LOSS_TOLERANCE  # the two normalisations differ here
    script = _load_script()
    for name, expected in (("global", global_mean), ("per_device", mean_of_means)):
        out = tmp_path / name  # 1 process, 2 micro-batches of 2: positions 0-1, then 2-3
        extra = ["--gradient_accumulation_steps", "2", "--loss_normalization", name]
        script.main(_normalisation_args(assets, class_count_data, out, *extra))
        assert _losses(out)[0]["loss"] == pytest.approx(expected, rel=1e-5, abs=0)


@pytest.mark.slow
def test_per_device_normalisation_on_two_processes_is_the_release(assets, class_count_data, tmp_path):
    global_mean, mean_of_means = _by_hand(class_count_data.terms)  # process 0: positions 0-1, process 1: 2-3
    for name, expected in (("global", global_mean), ("per_device", mean_of_means)):
        out = tmp_path / name
        _launch(_normalisation_args(assets, class_count_data, out, "--loss_normalization", name), num_processes=2)
        assert _losses(out)[0]["loss"] == pytest.approx(expected, rel=1e-5, abs=0)


# ---------------------------------------------------------------------------------------------------------------
# Nothing lost: a run owns its folder; resuming continues the same run; nothing to learn is refused
# ---------------------------------------------------------------------------------------------------------------


def _checkpoints(output_dir):
    return sorted(p.name for p in Path(output_dir).iterdir() if p.name.startswith("step_"))


def test_a_new_run_in_a_used_folder_is_refused_or_clears_it(assets, tmp_path, reset_accelerate):
    script, out = _load_script(), tmp_path / "out"
    first = _script_args(assets, out, "--per_device_train_batch_size", "2", "--max_train_steps", "2",
                         "--checkpointing_steps", "1", proposals="grid:2")  # fmt: skip
    script.main(first)
    assert _checkpoints(out) == ["step_1", "step_2"]
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["learning_rate"] == 1e-3 and len(run["run_id"]) == 16
    second = _script_args(assets, out, "--per_device_train_batch_size", "2", "--max_train_steps", "1",
                          "--learning_rate", "5e-4", proposals="grid:2")  # fmt: skip
    with pytest.raises(ValueError, match="holds another run's checkpoints or results \\(all_results.json, model"):
        script.main(second)
    assert _checkpoints(out) == ["step_1", "step_2"]  # untouched
    for resume in ([], ["--resume_from_checkpoint", "latest"]):  # "latest" is not another run's checkpoint
        with pytest.raises(ValueError, match="learning_rate: 0.001 -> 0.0005; max_train_steps: 2 -> 1"):
            script.main([*second, *resume] if resume else [*second, "--resume_from_checkpoint", str(out / "step_1")])
    script.main([*second, "--overwrite_output_dir"])
    assert _checkpoints(out) == [] and len(_losses(out)) == 1  # the first run's checkpoints are gone
    assert json.loads((out / "run.json").read_text())["settings"]["learning_rate"] == 5e-4


def test_resume_refuses_changed_settings_unless_allowed(assets, tmp_path, reset_accelerate):
    script, out = _load_script(), tmp_path / "out"
    args = _script_args(assets, out, "--per_device_train_batch_size", "2", "--max_train_steps", "3",
                        "--checkpointing_steps", "2", proposals="grid:2")  # fmt: skip
    script.main(args)
    reference = _losses(out)
    (out / "model.safetensors").unlink()
    script.main([*args, "--resume_from_checkpoint", "latest"])  # same settings: continues at step 2
    assert [r["loss"] for r in _losses(out)] == [r["loss"] for r in reference]
    changed = [*args[: args.index("--learning_rate") + 1], "1e-4", *args[args.index("--learning_rate") + 2 :]]
    with pytest.raises(ValueError, match="other settings \\(learning_rate: 0.001 -> 0.0001\\)"):
        script.main([*changed, "--resume_from_checkpoint", "latest"])
    script.main([*changed, "--resume_from_checkpoint", "latest", "--allow_changed_settings"])
    losses = _losses(out)
    assert losses[:2] == reference[:2] and losses[2]["learning_rate"] != reference[2]["learning_rate"]


@pytest.mark.parametrize("zero_shot", [False, True])
def test_a_training_set_without_labelled_pixels_is_refused(assets, tmp_path, zero_shot, reset_accelerate):
    label = np.full((32, 32), 255) if not zero_shot else np.ones((32, 32))  # unlabelled, or only the unseen "b"
    data = _save_dict(
        tmp_path / "data", {"train": {"image": [_pil(np.zeros((32, 32, 3)))] * 2, "label": [_pil(label)] * 2}}
    )
    out = tmp_path / "out"
    args = _script_args(assets, out, "--max_train_steps", "1", "--vocabulary", "a,b", proposals="grid:2")
    args[args.index("--dataset_path") + 1] = data
    args += ["--zero_shot", "--unseen_classes", "b"] if zero_shot else []
    with pytest.raises(ValueError, match="Every pixel of the 2 checked examples of split 'train' is unlabelled"):
        _load_script().main(args)
    assert not (out / "model.safetensors").exists()


def test_validation_errors_in_process():
    from datasets import Dataset, Features, Image

    features = Features({"image": Image(), "label": Image()})
    empty = Dataset.from_dict({"image": [], "label": []}, features=features)
    with pytest.raises(ValueError, match="Split 'train' is empty"):
        validate_training_dataset(empty, "image", "label", LabelConverter(["a"]))
    rgb_label = Dataset.from_dict({"image": [_pil(np.zeros((8, 8, 3)))], "label": [_pil(np.zeros((8, 8, 3)))]})
    with pytest.raises(ValueError, match="example 0 of split 'train': Label maps must be single-channel"):
        validate_training_dataset(rgb_label, "image", "label", LabelConverter(["a"]))


def test_flag_conflicts_are_refused(assets, tmp_path):
    script = _load_script()
    base = _script_args(assets, tmp_path / "out")
    with pytest.raises(SystemExit):  # both proposal sources
        script.parse_args([*base, "--proposal_column", "proposals"])
    with pytest.raises(SystemExit):  # push without network
        script.parse_args([*base, "--offline", "--push_to_hub"])
    with pytest.raises(SystemExit):  # a DataLoader worker would read only a shard of the stream
        script.parse_args([*base, "--streaming", "--dataloader_num_workers", "2"])
    with pytest.raises(SystemExit):  # clearing the folder and resuming from it
        script.parse_args([*base, "--overwrite_output_dir", "--resume_from_checkpoint", "latest"])
    args = script.parse_args([*base, "--short_side", "released"])
    assert args.short_side[0] == 320 and len(args.short_side) > 1


# ---------------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("short_side", [48, (40, 56, 72)])
def test_augmentation_matches_train_transform_and_moves_masks_with_labels(short_side):
    generator = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=generator)
    label = torch.randint(0, 4, (5, 7), generator=generator).repeat_interleave(10, 0).repeat_interleave(10, 1)
    config = AugmentationConfig(crop_size=48, short_side=short_side, flip_prob=0.5)
    flips = set()
    for seed in range(6):
        expected = train_transform(image, label, short_side, 48, generator=torch.Generator().manual_seed(seed))
        params = sample_augmentation(50, 70, config, torch.Generator().manual_seed(seed))
        masks = torch.stack([(label == c).float() for c in range(4)])
        got_image, got_label, got_masks = apply_augmentation(params, image, label, masks)
        assert torch.equal(got_image, expected[0]) and torch.equal(got_label, expected[1])
        assert got_masks.shape == (4, 48, 48)
        flips.add(params.flip)
        inside = got_label != 255  # masks follow the labels (soft only at class borders after resizing)
        agree = (got_masks.argmax(0) == got_label) & inside
        assert agree.sum() > 0.95 * inside.sum()
        assert (got_masks[:, ~inside] == 0).all()  # padding: no proposal there
    assert flips == {True, False}


def test_ssd_color_jitter_is_the_released_transform():
    image = torch.randint(0, 256, (3, 19, 45), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    image[:, :3] = torch.tensor([0, 255, 128], dtype=torch.uint8)[:, None, None]  # saturated and grey pixels too
    image[:, 3:5] = 255
    seen = set()
    for seed in range(40):
        params = sample_color_jitter(torch.Generator().manual_seed(seed))
        draws = {name: getattr(params, name) for name in ("brightness", "contrast", "saturation", "hue")}
        release = ColorAugSSD("RGB", **draws, contrast_first=params.contrast_first)
        expected = release.apply_image(image.permute(1, 2, 0).numpy())
        assert np.array_equal(apply_color_jitter(image, params).permute(1, 2, 0).numpy(), expected)
        seen |= {(name, value is None) for name, value in draws.items()} | {("order", params.contrast_first)}
        assert params.brightness is None or -32 <= params.brightness <= 32
        assert all(v is None or 0.5 <= v <= 1.5 for v in (params.contrast, params.saturation))
        assert params.hue is None or -18 <= params.hue <= 18
    assert len(seen) == 10  # every step both skipped and applied, both orders
    strong = ColorAugSSD("RGB", None, None, 1.5, 18, True).apply_image(image.permute(1, 2, 0).numpy())
    assert not np.array_equal(strong, image.permute(1, 2, 0).numpy())  # the reference does change colours


def test_reference_colour_conversions_are_opencv():
    cv2 = pytest.importorskip("cv2")
    grid = np.stack(np.meshgrid(np.arange(180), np.arange(256), np.arange(0, 256, 5), indexing="ij"), -1)
    hsv = grid.reshape(-1, 32, 3).astype(np.uint8)  # rows of 32 pixels: OpenCV's vectorised path throughout
    assert np.array_equal(opencv_hsv2bgr(hsv), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    bgr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(opencv_bgr2hsv(bgr), cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV))


def test_color_jitter_is_seeded_per_example_and_keeps_the_geometry(assets):
    from datasets import load_from_disk

    data = load_from_disk(assets.dataset)["train"]
    converter = LabelConverter(resolve_vocabulary(None, data))
    plain = TrainingExamples(data, converter, AugmentationConfig(crop_size=72, short_side=56), seed=4)
    jittered = TrainingExamples(data, converter, AugmentationConfig(72, 56, color_jitter="ssd"), seed=4)
    changed = 0
    for position in range(8):
        a, b = plain[(position, 3)], jittered[(position, 3)]
        assert torch.equal(a["label"], b["label"])  # same crop and flip
        assert torch.equal(b["image"], jittered[(position, 3)]["image"])  # same position, same colours
        assert (b["image"][:, 56:] == 128).all()  # padding is not jittered
        changed += not torch.equal(a["image"], b["image"])
    assert changed >= 4


def test_step_sampler_splits_global_batches_and_resumes():
    one = StepBatchSampler(10, 4, max_steps=6, seed=1)
    two = [StepBatchSampler(10, 2, max_steps=6, num_processes=2, process_index=r, seed=1) for r in range(2)]
    accumulated = StepBatchSampler(10, 1, max_steps=6, gradient_accumulation_steps=4, seed=1)
    batches_one = list(one)
    per_rank = [list(s) for s in two]
    micro = list(accumulated)
    assert len(batches_one) == 6 and len(micro) == 24
    for step in range(6):
        assert batches_one[step] == per_rank[0][step] + per_rank[1][step] == sum(micro[4 * step : 4 * step + 4], [])
    indices = [index for batch in batches_one for _, index in batch]
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))  # epochs
    assert indices[:10] != indices[10:20]  # reshuffled each pass
    resumed = list(StepBatchSampler(10, 4, max_steps=6, start_step=4, seed=1))
    assert resumed == batches_one[4:]
    assert list(StepBatchSampler(10, 4, max_steps=6, seed=2)) != batches_one
    with pytest.raises(ValueError, match="process_index"):
        StepBatchSampler(10, 2, max_steps=1, num_processes=2, process_index=2)
    with pytest.raises(ValueError, match=r"Seeds must be non-negative integers, got \(-1, 3\)"):
        derived_seed(-1, 3)
    with pytest.raises(ValueError, match="num_examples must be >= 1, got 0"):
        StepBatchSampler(0, 2, max_steps=1)
    with pytest.raises(ValueError, match=r"start_step must be in \[0, max_steps=6\], got 7"):
        StepBatchSampler(10, 2, max_steps=6, start_step=7)


def test_label_converter_coco_stuff_and_zero_shot():
    names = resolve_vocabulary("coco_stuff_171")
    converter = LabelConverter(names, "coco_stuff", unseen_ids=[1, 5])
    raw = np.array([[0, 1, 2], [11, 255, 181]], dtype=np.uint8)  # 11 is an unused raw id
    lut = coco_stuff_lut()
    contiguous = lut[raw]
    got = converter(raw)
    assert got[1, 0] == 255 and got[1, 1] == 255  # unused id and unlabelled
    assert got[0, 1] == 255  # raw 1 -> class 1: unseen -> ignored
    assert got[0, 0] == 0 and got[0, 2] == contiguous[0, 2] - 1 and got[1, 2] == 170 - 2  # renumbered past 2 unseen
    assert converter.training_class_names == [n for i, n in enumerate(names) if i not in (1, 5)]
    with pytest.raises(ValueError, match="raw stuffthingmaps values in 0..255"):
        converter(np.array([[300]]))
    with pytest.raises(ValueError, match="Label ids must lie in \\[0, 2\\]"):
        LabelConverter(["a", "b", "c"])(np.array([[0, 3], [255, 7]]))
    with pytest.raises(ValueError, match="ignore_index 2 is a class id"):
        LabelConverter(["a", "b", "c"], ignore_index=2)


def test_spearman_against_definition():
    def reference(x, y):  # ranks from the definition: 1 + #smaller + (#equal - 1) / 2, then Pearson
        def ranks(v):
            return np.array([1 + (v < a).sum() + ((v == a).sum() - 1) / 2 for a in v])

        return np.corrcoef(ranks(x), ranks(y))[0, 1]

    generator = np.random.default_rng(0)
    for _ in range(5):
        x = generator.integers(0, 5, 12).astype(float)  # ties
        y = x + generator.normal(0, 2, 12)
        assert spearman_correlation(torch.tensor(x), torch.tensor(y)) == pytest.approx(reference(x, y), abs=1e-12)
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman_correlation(torch.arange(5.0), torch.arange(5.0).flip(0)) == pytest.approx(-1.0)
    assert np.isnan(spearman_correlation(torch.ones(4), torch.arange(4.0)))


def test_poly_schedule_is_detectron2_poly():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=0.5)
    scheduler = poly_lr_scheduler(optimizer, num_training_steps=10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(rates, [0.5 * (1 - k / 10) ** 0.9 for k in range(10)], rtol=1e-12)


def _tiny_batch(model, seed=0, batch=4, size=16, proposals=5):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (batch, size, size), generator=generator)
    labels[0] = 255  # an image without labelled pixels
    labels[1, :4] = 255
    masks = torch.rand(batch, proposals, size, size, generator=generator)
    valid = torch.ones(batch, proposals, dtype=torch.bool)
    valid[2, 3:] = False
    pixel_values = torch.randn(batch, 3, 32, 32, generator=generator)
    return {"pixel_values": pixel_values, "proposal_masks": masks, "proposal_valid_mask": valid, "labels": labels}


def test_training_step_global_normalisation_is_split_invariant():
    from maft_hf import MaskAwareCLIPModel
    from maft_hf.training.freezing import apply_freeze_policy

    torch.manual_seed(0)
    model = MaskAwareCLIPModel(tiny_maft_config())
    teacher = make_teacher(model)
    with torch.no_grad():  # make student and teacher differ so L_dis is not 0
        model.vision_model.post_layernorm.weight.mul_(1.5)
    apply_freeze_policy(model)
    student = MaskAwareStudent(model)
    classifier = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    batch = _tiny_batch(model)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full = training_step(student, teacher, batch, classifier, 0.5)
    full_grads = grads(full.loss)
    # default normalisation = maft_loss of the whole batch
    assert full.loss.item() == pytest.approx(full.mask_aware_loss.item() + 0.5 * full.distillation_loss.item())
    halves = [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2)]
    count = sum(int(training_step(student, teacher, h, classifier, 0.5).mask_aware_count) for h in halves)
    # image 0 is unlabelled, image 2 has 3 valid proposals, the others 3 classes x 5 proposals
    assert count == int(full.mask_aware_count) == 0 + 3 * 5 + 3 * 3 + 3 * 5
    total_loss, split_grads = 0.0, None
    for half in halves:
        out = training_step(student, teacher, half, classifier, 0.5, mask_aware_normalizer=count,
                            distillation_normalizer=4 * 3)  # fmt: skip
        total_loss += out.loss.item()
        g = grads(out.loss)
        split_grads = g if split_grads is None else [a + b for a, b in zip(split_grads, g)]
    assert total_loss == pytest.approx(full.loss.item(), rel=1e-5)
    for a, b in zip(split_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-9)


def test_examples_collate_prepare_and_rank_correlation(assets):
    from datasets import load_from_disk

    from maft_hf.proposals.grid import GridProposals

    data = load_from_disk(assets.dataset)
    converter = LabelConverter(resolve_vocabulary(None, data))
    examples = TrainingExamples(data["train"], converter, AugmentationConfig(crop_size=48, short_side=56), seed=4)
    first, again = examples[(7, 3)], examples[(7, 3)]
    assert torch.equal(first["image"], again["image"]) and first["image"].shape == (3, 48, 48)
    assert not torch.equal(first["image"], examples[(8, 3)]["image"])  # another position, another crop
    batch = collate([examples[(p, p)] for p in range(3)])
    assert batch["images"].dtype == torch.uint8 and batch["labels"].shape == (3, 48, 48)
    model, processor = load_model_and_processor(assets.model)
    prepared = prepare_batch(batch, 32, GridProposals(3))
    assert prepared["pixel_values"].shape == (3, 3, 32, 32)
    assert prepared["proposal_masks"].shape == (3, 9, 48, 48) and prepared["proposal_valid_mask"].all()
    classifier = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    result = rank_correlation_eval(model, data["test"], classifier, GridProposals(4))
    assert result["num_images"] == 8 and result["num_rows"] > 8 and -1 <= result["spearman"] <= 1
    assert result["mask_aware_loss"] > 0
    with pytest.raises(ValueError, match="no column --label_column 'mask'"):
        validate_training_dataset(data["train"], "image", "mask", converter)


class VocabularyProposals:
    """A fake generator that needs the vocabulary (as FreeSeg): grid proposals, and a record of each call."""

    needs_vocabulary = True

    def __init__(self):
        from maft_hf.proposals.grid import GridProposals

        self.grid, self.calls = GridProposals(2), []

    def __call__(self, images, class_names=None, text_classifier=None):
        self.calls.append((list(class_names), None if text_classifier is None else tuple(text_classifier.shape)))
        return self.grid(images)


def test_generators_that_need_the_vocabulary_get_it(assets, tmp_path, monkeypatch, reset_accelerate):
    from maft_hf.training import data

    fake = VocabularyProposals()
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    batch = {"images": images, "labels": torch.zeros(2, 16, 16, dtype=torch.long)}
    prepared = prepare_batch(batch, 32, fake, class_names=["sky", "car"], text_classifier=torch.zeros(2, 16))
    assert prepared["proposal_masks"].shape == (2, 4, 16, 16) and fake.calls == [(["sky", "car"], (2, 16))]
    fake.calls.clear()
    monkeypatch.setattr(data, "load_training_proposal_generator", lambda *args, **kwargs: fake)
    metrics = _load_script().main(
        _script_args(
            assets,
            tmp_path / "out",
            "--max_train_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--eval_split",
            "test",
            "--max_eval_samples",
            "2",
            "--zero_shot",
            "--unseen_classes",
            "car",
            proposals="fake:0",
        )  # fmt: skip
    )
    names = fake.calls[0][0]
    assert "car" not in names and len(names) == 7  # the training vocabulary: 8 classes without the unseen one
    assert fake.calls == [(names, (7, 16))] * (2 + 2 + 2)  # 2 held-out images before and after, 2 training steps
    assert np.isfinite(metrics["rank_correlation_final"])


def test_precomputed_proposal_column_is_augmented_with_the_image(tmp_path):
    from datasets import Array3D, Dataset, Features, Image

    label = np.zeros((40, 40), dtype=np.uint8)
    label[:, 20:] = 1
    stack = np.stack([label == 0, label == 1]).astype(np.uint8)  # one mask per class: IoU 1 with its class
    features = Features({"image": Image(), "label": Image(), "proposals": Array3D((2, 40, 40), "uint8")})
    data = Dataset.from_dict(
        {"image": [_pil(np.zeros((40, 40, 3)))], "label": [_pil(label)], "proposals": [stack]}, features=features
    )
    converter = LabelConverter(["left", "right"])
    assert validate_training_dataset(data, "image", "label", converter, "proposals") == (1, 1)
    augmentation = AugmentationConfig(crop_size=32, short_side=48)
    examples = TrainingExamples(data, converter, augmentation, proposal_column="proposals")
    for position in range(4):
        item = examples[(position, 0)]
        masks, target = item["proposal_masks"], item["label"]
        inside = target != 255
        assert torch.equal((masks[1] > 0.5)[inside], (target == 1)[inside])
    bad = data.cast_column("proposals", Array3D((2, 40, 40), "float32"))
    bad = bad.map(lambda example: {"proposals": np.full((2, 40, 40), 2.0)})
    with pytest.raises(ValueError, match="column 'proposals'.*\\[0, 1\\]"):
        validate_training_dataset(bad, "image", "label", converter, "proposals")


def test_checkpoint_is_atomic(tmp_path, monkeypatch, reset_accelerate):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    model = accelerator.prepare(model)
    save_checkpoint(accelerator, tmp_path, 1, {"completed_steps": 1})
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "step_1")

    def crash(*args, **kwargs):  # a kill in the middle of writing: files half written, then gone
        os.makedirs(args[0], exist_ok=True)
        (Path(args[0]) / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(accelerator, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, tmp_path, 2, {"completed_steps": 2})
    assert (tmp_path / ".tmp_step_2").exists() and not (tmp_path / "step_2").exists()
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "step_1")  # the complete one


def test_plain_clip_checkpoint_starts_fine_tuning(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from maft_hf import MAFTConfig

    maft = tiny_maft_config().to_dict()
    vision = {k: v for k, v in maft["vision_config"].items() if k in ("hidden_size", "intermediate_size",
              "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")}  # fmt: skip
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=maft["text_config"], projection_dim=16))
    clip.save_pretrained(tmp_path / "clip")
    build_tiny_tokenizer(tmp_path / "clip")
    model, processor = load_model_and_processor(str(tmp_path / "clip"), input_image_size=32, mask_start_layer=2)
    assert isinstance(model.config, MAFTConfig) and model.config.vision_config.mask_start_layer == 2
    assert processor.image_processor.size == 32 and processor.tokenizer("a")["input_ids"][0] == 0
    reference = clip.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="has model_type 'bert'"):
        load_model_and_processor(str(tmp_path / "bert"))


def test_model_card_of_a_run(tmp_path):
    build_tiny_checkpoint(tmp_path)
    args = {"model_name_or_path": "openai/clip-vit-base-patch16", "dataset_name": "me/coco", "train_split": "train",
            "training_vocabulary": ["sky", "car"], "hub_model_id": "me/maft", "freeze_policy": "released",
            "learning_rate": 1e-5, "max_train_steps": 1000, "global_batch_size": 16}  # fmt: skip
    path = write_model_card(tmp_path, args, {"rank_correlation_final": 0.5})
    text = Path(path).read_text()
    assert 'from_pretrained("me/maft")' in text and "datasets:\n- me/coco" in text
    assert "| Learning rate | 1e-5 | 1e-5 |" in text and "| rank_correlation_final | — | 0.5 |" in text


# ---------------------------------------------------------------------------------------------------------------
# --streaming: a local dataset read as an IterableDataset; resuming is exact
# ---------------------------------------------------------------------------------------------------------------


def test_streaming_run_resumes_exactly(assets, tmp_path, reset_accelerate):
    import shutil

    script, out = _load_script(), tmp_path / "out"
    args = _script_args(assets, out, "--streaming", "--max_train_samples", "6", "--per_device_train_batch_size", "2",
                        "--gradient_accumulation_steps", "2", "--max_train_steps", "4", "--checkpointing_steps", "2",
                        "--color_jitter", "ssd", "--eval_split", "test", "--max_eval_samples", "2",
                        proposals="grid:2")  # fmt: skip
    metrics = script.main(args)  # 16 examples of a 6-example stream: three passes, reshuffled
    assert np.isfinite(metrics["rank_correlation_final"])
    assert json.loads((out / "run.json").read_text())["settings"]["streaming"] is True
    killed = tmp_path / "killed"  # the folder of a run killed after its step-2 checkpoint
    killed.mkdir()
    for name in ("run.json", "step_2"):
        (shutil.copytree if name == "step_2" else shutil.copy)(out / name, killed / name)
    resumed_args = list(args)
    resumed_args[args.index("--output_dir") + 1] = str(killed)
    script.main([*resumed_args, "--resume_from_checkpoint", "latest"])
    reference, resumed = _losses(out), _losses(killed)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]
    final, expected = _weights(killed), _weights(out)
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    indexed = list(args)  # the same run without --streaming: another data order
    indexed[args.index("--output_dir") + 1] = str(tmp_path / "indexed")
    indexed.remove("--streaming")
    script.main(indexed)
    assert [r["loss"] for r in _losses(tmp_path / "indexed")] != [r["loss"] for r in reference]
