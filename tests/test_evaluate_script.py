"""scripts/evaluate.py and maft_hf.evaluation.loop end to end: tiny MAFT checkpoint, synthetic dataset saved to disk,
grid and tiny Mask2Former proposals, 1 process in-process and 2 processes through `accelerate launch`."""

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maft_hf import MAFTProcessor, MaskAwareCLIPModel, segment
from maft_hf.data.benchmarks import BENCHMARKS, benchmark_metadata
from maft_hf.data.labels import dataset_info_with_class_names, get_class_names
from maft_hf.data.labels import label_map_array as label_array
from maft_hf.data.synthetic import save_synthetic_dataset
from maft_hf.evaluation.loop import evaluate_segmentation
from maft_hf.evaluation.metrics import harmonic_mean
from maft_hf.evaluation.report import build_results_record, format_results_markdown, model_card_results
from maft_hf.hub.loading import load_proposal_generator
from maft_hf.testing import build_tiny_checkpoint, build_tiny_mask2former

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "evaluate.py"
NUM_IMAGES = 7  # odd: 2 processes get 4 + 3 images; padding duplicates would change the counts
IMAGE_SIZE = 32


def _load_script():
    return importlib.import_module("maft_hf.cli.evaluate")


evaluate_script = _load_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny MAFT checkpoint whose proposals get different classes, the synthetic dataset (7 test images) saved to
    disk, and a tiny Mask2Former whose first classes carry synthetic class names (so the Eq. 9 ensemble matches
    some vocabulary classes and not others)."""
    root = tmp_path_factory.mktemp("evaluate")
    checkpoint = build_tiny_checkpoint(root / "maft", initializer_range=0.2)
    save_synthetic_dataset(root / "synthetic", num_train=1, num_test=NUM_IMAGES, image_size=IMAGE_SIZE)
    mask2former = Path(build_tiny_mask2former(root / "mask2former"))
    config = json.loads((mask2former / "config.json").read_text())
    config["id2label"] = {"0": "sky", "1": "grass", "2": "car", "3": "thing3", "4": "thing4"}
    config["label2id"] = {name: int(i) for i, name in config["id2label"].items()}
    (mask2former / "config.json").write_text(json.dumps(config))
    return {"root": root, "checkpoint": checkpoint, "data": str(root / "synthetic"), "mask2former": str(mask2former)}


@pytest.fixture(scope="module")
def test_split(workspace):
    from datasets import load_from_disk

    return load_from_disk(workspace["data"])["test"]


@pytest.fixture(scope="module")
def model_and_processor(workspace):
    return MaskAwareCLIPModel.from_pretrained(workspace["checkpoint"]).eval(), MAFTProcessor.from_pretrained(
        workspace["checkpoint"]
    )


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """`--offline` sets the Hub's offline variables in os.environ and `main` creates an Accelerator: undo both."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _args(workspace, output_dir, proposals, *extra):
    return [
        "--model", workspace["checkpoint"], "--offline", "--cpu", "--no_progress", "--dataset_path", workspace["data"],
        "--split", "test", "--proposals", proposals, "--batch_size", "2", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def _run_two_processes(workspace, output_dir, proposals, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "CUDA_"))}
    env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), str(SCRIPT),
        *_args(workspace, output_dir, proposals),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads((Path(output_dir) / "results.json").read_text())


def _reference_confusion(workspace, dataset, model, processor, proposals, ensemble_weight):
    """The confusion matrix written out from its definition: segment every image, count (label, prediction)."""
    names = get_class_names(dataset)
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for row in dataset:
        prediction = segment(row["image"], names, model, processor, proposals, ensemble_weight)[0]["segmentation"]
        label = np.array(row["label"]).astype(np.int64)
        keep = label != 255
        np.add.at(counts, (label[keep], prediction.numpy()[keep]), 1)
    return counts


@pytest.mark.parametrize(
    "proposals, port",
    [("grid:2", 29561), ("mask2former", 29562)],
    ids=["grid", "mask2former"],
)
@pytest.mark.slow
def test_one_and_two_processes_give_the_same_numbers(
    workspace, test_split, model_and_processor, tmp_path, proposals, port
):
    spec = f"mask2former:{workspace['mask2former']}" if proposals == "mask2former" else proposals
    single = evaluate_script.main(_args(workspace, tmp_path / "one", spec))
    double = _run_two_processes(workspace, tmp_path / "two", spec, port)

    assert single["run"]["num_processes"] == 1 and double["run"]["num_processes"] == 2
    assert double["run"]["images_per_process"] == [4, 3]  # disjoint shards, no padding duplicates
    assert single["metrics"]["num_images"] == double["metrics"]["num_images"] == NUM_IMAGES
    one = np.load(tmp_path / "one" / "confusion_matrix.npy")
    two = np.load(tmp_path / "two" / "confusion_matrix.npy")
    np.testing.assert_array_equal(one, two)
    assert single["metrics"] == double["metrics"] and single["per_class"] == double["per_class"]
    assert json.loads((tmp_path / "one" / "results.json").read_text()) == single

    # Every labelled pixel counted once, and the matrix equals the definition.
    labels = np.stack([np.array(label) for label in test_split["label"]])
    assert one.sum() == (labels != 255).sum()
    model, processor = model_and_processor
    generator = load_proposal_generator(spec, {}, True, "cpu")
    expected = _reference_confusion(workspace, test_split, model, processor, generator, 0.7)
    np.testing.assert_array_equal(one, expected)
    assert single["run"]["ensemble_applied"] is (proposals == "mask2former")
    assert (one.sum(axis=0) > 0).sum() > 1, "the tiny model should predict several classes"

    # The scores follow from the matrix (detectron2 rule: IoU over classes present in ground truth or prediction).
    tp, gt, pred = np.diag(one), one.sum(1), one.sum(0)
    union = gt + pred - tp
    assert single["metrics"]["mIoU"] == pytest.approx(100 * np.mean(tp[union > 0] / union[union > 0]))
    assert single["metrics"]["pAcc"] == pytest.approx(100 * tp.sum() / gt.sum())

    table = (tmp_path / "one" / "results.md").read_text()
    assert "| Method | Dataset | Classes | mIoU | mAcc | pAcc | fwIoU |" in table
    assert f"{single['metrics']['mIoU']:.2f}" in table


def test_zero_shot_table_and_hiou(workspace, tmp_path):
    record = evaluate_script.main(_args(workspace, tmp_path, "grid:2", "--unseen_classes", "person,car"))
    metrics = record["metrics"]
    assert metrics["unseen_classes"] == [6, 7]
    assert metrics["hIoU"] == pytest.approx(harmonic_mean(metrics["mIoU_seen"], metrics["mIoU_unseen"]))
    per_class = np.array([np.nan if v is None else v for v in record["per_class"]["iou"]])
    assert metrics["mIoU_unseen"] == pytest.approx(np.nanmean(per_class[[6, 7]]))
    table = (tmp_path / "results.md").read_text()
    assert "| Method | Dataset | seen mIoU | unseen mIoU | hIoU | mIoU |" in table
    row = next(line for line in table.splitlines() if line.startswith("| **ours**"))
    assert row.endswith(" | ".join(f"{metrics[k]:.2f}" for k in ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU")) + " |")
    assert record["run"]["unseen_classes_known_to_generator"] == [] and "Not zero-shot" not in table

    # A generator trained on "car" scores an unseen class through the ensemble: the run says it is not zero-shot.
    spec = f"mask2former:{workspace['mask2former']}"
    record = evaluate_script.main(_args(workspace, tmp_path / "m2f", spec, "--unseen_classes", "person,car"))
    assert record["run"]["unseen_classes_known_to_generator"] == ["car"]
    assert "Not zero-shot" in (tmp_path / "m2f" / "results.md").read_text()
    record = evaluate_script.main(_args(workspace, tmp_path / "off", spec, "--unseen_classes", "6,7",
                                        "--ensemble_weight", "0"))  # fmt: skip
    assert record["run"]["unseen_classes_known_to_generator"] == [] and not record["run"]["ensemble_applied"]


def _as_benchmark(dataset, name, tmp_path):
    """The synthetic images re-labelled as a prepared benchmark (ids 0..7 of its vocabulary, its metadata)."""
    from datasets import Dataset

    spec = BENCHMARKS[name]
    description = f"fake {name}\nmaft_hf_benchmark={json.dumps(benchmark_metadata(name))}"
    info = dataset_info_with_class_names(spec.class_names(), description, dataset.features)
    fake = Dataset.from_dict(dataset.to_dict(), features=dataset.features, info=info)
    path = tmp_path / name
    fake.save_to_disk(str(path))
    return str(path)


def test_open_vocabulary_benchmark_table_and_model_card(workspace, test_split, tmp_path):
    model_card = pytest.importorskip("maft_hf.hub.model_card")
    if not model_card.TEMPLATE_PATH.is_file():
        pytest.skip("the model card template is missing")
    card = tmp_path / "card" / "README.md"
    card.parent.mkdir()
    model_card.make_model_card("org/tiny-maft", backbone="vit-b16").save(card)

    path = _as_benchmark(test_split, "pascal_voc_20", tmp_path)
    card_option = ["--update_model_card", str(card)]
    argv = _args(workspace, tmp_path / "out", "grid:2", "--benchmark", "pascal_voc_20", *card_option)
    argv[argv.index("--dataset_path") + 1] = path
    argv = argv[: argv.index("--split")] + argv[argv.index("--split") + 2 :]  # a single-split dataset
    record = evaluate_script.main(argv)

    assert record["run"]["benchmark"] == "pascal_voc_20" and record["run"]["num_classes"] == 20
    assert record["paper"]["results"] == {"mIoU": 90.0}
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| Method | A-847 | A-150 | PC-459 | PC-59 | PAS-20 |" in table
    assert "| FreeSeg + MAFT, ViT-B/16 (paper Tab. 3) | 10.1 | 29.1 | 12.8 | 53.5 | 90.0 |" in table
    assert "| Authors' released ViT-B/16 checkpoint | 10.25 | 29.14 | 12.85 | 53.33 | 90.44 |" in table
    ours = next(line for line in table.splitlines() if line.startswith("| **ours**"))
    assert ours.endswith(f"| – | – | – | – | {record['metrics']['mIoU']:.2f} |")

    text = card.read_text()
    assert "model-index" in text and "pascal_voc_20" in text
    assert str(round(record["metrics"]["mIoU"], 4)) in text


def test_zero_shot_benchmark_on_the_coco_stuff_171_dataset(workspace, test_split, tmp_path):
    """coco_stuff_zero_shot reads a prepared coco_stuff_171 folder (same labels): its 15 unseen classes and Tab. 1."""
    argv = _args(workspace, tmp_path / "out", "grid:2", "--benchmark", "coco_stuff_zero_shot")
    argv[argv.index("--dataset_path") + 1] = _as_benchmark(test_split, "coco_stuff_171", tmp_path)
    record = evaluate_script.main(argv[: argv.index("--split")] + argv[argv.index("--split") + 2 :])
    assert record["metrics"]["unseen_classes"] == BENCHMARKS["coco_stuff_zero_shot"].unseen_classes()
    assert record["metrics"]["num_images"] == NUM_IMAGES and record["run"]["num_classes"] == 171
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| FreeSeg + MAFT, ViT-B/16 (paper Tab. 1) | COCO-Stuff (156 seen / 15 unseen) | 43.3 | 50.4 |" in table


def test_combine_results_and_zero_shot_paper_row(tmp_path):
    def record(benchmark, **metrics):
        results = {"mIoU": 20.0, "num_images": 3, "num_processes": 1, "images_per_process": [3], **metrics}
        return build_results_record(
            results, model="m", dataset=f"data/{benchmark}", split="validation", proposals="p",
            ensemble_weight=0.7, class_names=BENCHMARKS[benchmark].class_names(), benchmark=benchmark,
        )  # fmt: skip

    files = []
    for name, rec in [
        ("a150", record("ade20k_150", mIoU=30.5)),
        ("pc59", record("pascal_context_59", mIoU=float("nan"))),
        ("coco", record("coco_stuff_zero_shot", mIoU_seen=40.0, mIoU_unseen=50.0, hIoU=44.44)),
    ]:
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(rec))
    assert record("pascal_context_59", mIoU=float("nan"))["metrics"]["mIoU"] is None  # valid JSON, no NaN
    records = evaluate_script.main(["--combine_results", *map(str, files), "--output_dir", str(tmp_path / "all")])
    table = (tmp_path / "all" / "results.md").read_text()
    assert table == format_results_markdown(records)
    paper = "| FreeSeg + MAFT, ViT-B/16 (paper Tab. 1) | COCO-Stuff (156 seen / 15 unseen) |"
    assert paper + " 43.3 | 50.4 | 46.5 | 43.9 |" in table
    assert "| **ours**: `m`, proposals `p`, no ensemble | – | 30.50 | – | – | – |" in table  # PC-59 NaN: –
    assert model_card_results(records[2]) == {
        "coco_stuff_zero_shot": {"mIoU": 20.0, "mIoU_seen": 40.0, "mIoU_unseen": 50.0, "hIoU": 44.44}
    }
    assert model_card_results(records[1]) == {}


def test_dataset_name_through_load_dataset_and_streaming(workspace, test_split, tmp_path):
    """The `load_dataset` path (a local folder of parquet files stands in for a Hub dataset), downloaded and
    streamed, counts the same pixels as the saved dataset."""
    folder = tmp_path / "hub" / "data"
    folder.mkdir(parents=True)
    test_split.to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    matrices = []
    for name, extra in [("disk", []), ("hub", ["--streaming"]), ("hub_full", [])]:
        argv = _args(workspace, tmp_path / name, "grid:2", "--vocabulary", "synthetic", *extra)
        if name != "disk":
            argv = argv[: argv.index("--dataset_path")] + argv[argv.index("--split") + 2 :]
            argv += ["--dataset_name", str(tmp_path / "hub"), "--dataset_cache_dir", str(tmp_path / "cache")]
        record = evaluate_script.main(argv)
        assert record["run"]["split"] == ("test" if name == "disk" else "validation")
        matrices.append(np.load(tmp_path / name / "confusion_matrix.npy"))
    np.testing.assert_array_equal(matrices[0], matrices[1])
    np.testing.assert_array_equal(matrices[0], matrices[2])


def test_iterable_dataset_gives_the_same_matrix(test_split, model_and_processor):
    model, processor = model_and_processor
    names = get_class_names(test_split)
    mapped = evaluate_segmentation(model, processor, test_split, names, "grid:2", batch_size=3, progress=False)
    streamed = evaluate_segmentation(
        model, processor, test_split.to_iterable_dataset(), names, "grid:2", batch_size=2, progress=False
    )
    assert torch.equal(mapped["confusion_matrix"].matrix, streamed["confusion_matrix"].matrix)
    assert streamed["num_images"] == NUM_IMAGES
    first = evaluate_segmentation(model, processor, test_split, names, "grid:2", max_samples=2, progress=False)
    assert first["num_images"] == 2 and first["confusion_matrix"].matrix.sum() < mapped["confusion_matrix"].matrix.sum()


def test_saved_progress_is_keyed_by_the_rows_given(test_split, model_and_processor, tmp_path):
    """The progress key names the dataset's own fingerprint (unchanged by the columns the loop reads), so progress
    saved by one version of the loop resumes in the next one."""
    import json

    model, processor = model_and_processor
    names = get_class_names(test_split)
    wide = test_split.add_column("note", ["x"] * len(test_split))
    options = dict(progress=False, progress_dir=tmp_path, save_every=1)
    evaluate_segmentation(model, processor, wide, names, "grid:2", max_samples=2, **options)
    with np.load(tmp_path / "process-0-of-1.npz") as saved:
        key = json.loads(saved["meta"].tobytes())["key"]
    assert key["dataset_fingerprint"] == wide.select(range(2))._fingerprint and key["num_examples"] == 2


# ---- bad input -------------------------------------------------------------------------------------------------
def _plain_dataset(images, labels):
    """A dataset that stores no class names (so only the label scan can catch a wrong vocabulary)."""
    from datasets import Dataset, Features, Image

    features = Features({"image": Image(mode="RGB"), "label": Image(mode="L")})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_vocabulary_not_matching_the_labels(workspace, test_split, model_and_processor, tmp_path):
    model, processor = model_and_processor
    with pytest.raises(ValueError, match=r"vocabulary has 4 classes but the dataset's labels index 8 stored"):
        evaluate_script.main(_args(workspace, tmp_path, "grid:2", "--vocabulary", "sky,grass,water,road"))
    plain = _plain_dataset(test_split["image"], test_split["label"])
    present = sorted({int(v) for label in test_split["label"][:4] for v in np.unique(label) if 4 <= v < 255})
    with pytest.raises(ValueError, match=re.escape(f"labels hold class ids {present}") + ".*vocabulary has 4 classes"):
        evaluate_segmentation(model, processor, plain, ["sky", "grass", "water", "road"], "grid:2", progress=False)
    with pytest.raises(ValueError, match="--vocabulary has 8 classes but the pascal_voc_20 benchmark has 20"):
        evaluate_script.main(_args(workspace, tmp_path, "grid:2", "--benchmark", "pascal_voc_20", "--vocabulary",
                                   "synthetic"))  # fmt: skip
    with pytest.raises(ValueError, match="differs from the ade20k_847 benchmark's ignore index 65535"):
        evaluate_script.main(_args(workspace, tmp_path, "grid:2", "--benchmark", "ade20k_847", "--ignore_index", "255"))
    assert not (tmp_path / "results.json").exists()


def test_missing_label_column_names_the_columns(workspace, tmp_path):
    with pytest.raises(ValueError, match=r"no label column 'segmentation'; its columns are \['image', 'label'\]"):
        evaluate_script.main(_args(workspace, tmp_path, "grid:2", "--label_column", "segmentation"))


def test_label_of_another_size_than_its_image(test_split, model_and_processor):
    from PIL import Image

    model, processor = model_and_processor
    names = get_class_names(test_split)
    labels = list(test_split["label"])
    labels[5] = labels[5].resize((16, 16), Image.NEAREST)  # beyond the pre-loop scan: the matrix's error
    with pytest.raises(ValueError, match=r"sample 5: predictions and references must have the same shape, got "
                       r"predictions \(32, 32\) and references \(16, 16\)"):  # fmt: skip
        evaluate_segmentation(model, processor, _plain_dataset(test_split["image"], labels), names, "grid:2",
                              batch_size=2, progress=False)  # fmt: skip
    labels[1] = labels[5]  # inside the scan: refused before any model call
    with pytest.raises(ValueError, match=r"sample 1: the label map is \(H, W\) = \(16, 16\) but its image is"):
        evaluate_segmentation(model, processor, _plain_dataset(test_split["image"], labels), names, "grid:2")


@pytest.mark.slow
def test_cli_reports_errors_on_one_line(workspace, tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *_args(workspace, tmp_path, "grid:2", "--label_column", "segmentation")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert done.returncode != 0
    assert "evaluate.py: error: The dataset has no label column 'segmentation'" in done.stderr
    assert "Traceback" not in done.stderr


def test_label_array_decodes_8_and_16_bit_maps():
    from PIL import Image

    from maft_hf.data.benchmarks import encode_label_png

    wide = np.array([[0, 300], [65535, 846]], dtype=np.uint16)
    np.testing.assert_array_equal(label_array({"bytes": encode_label_png(wide), "path": None}), wide)
    np.testing.assert_array_equal(label_array(Image.fromarray(np.uint8([[1, 255]]))), [[1, 255]])
    with pytest.raises(ValueError, match=r"single-channel \(H, W\) class-id maps, got shape \(2, 2, 3\)"):
        label_array(Image.new("RGB", (2, 2)))


# ---- resumable runs ----------------------------------------------------------------------------------------------
SLOW_RUNNER = """
import sys, time
import maft_hf.evaluation.loop as loop
from maft_hf.cli.evaluate import main

real_segment = loop.segment
def slow_segment(*args, **kwargs):  # slow enough for the test to kill the run between two images
    time.sleep(float(sys.argv[1]))
    return real_segment(*args, **kwargs)
loop.segment = slow_segment
main(sys.argv[2:])
"""


def _launch(workspace, output_dir, processes, port, delay, *extra):
    """Start the evaluate command (1 process, or 2 through `accelerate launch`) in its own process group."""
    runner = Path(output_dir).parent / "slow_runner.py"
    runner.write_text(SLOW_RUNNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "CUDA_"))}
    env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT / "src"))  # fmt: skip
    launcher = [sys.executable]
    if processes == 2:
        launcher += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]  # fmt: skip
    argv = [*_args(workspace, output_dir, "grid:2"), "--batch_size", "1", "--save_every", "1", *extra]
    return subprocess.Popen(
        [*launcher, str(runner), str(delay), *argv], env=env, cwd=ROOT, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _saved_count(path):
    with np.load(path, allow_pickle=False) as saved:
        return json.loads(saved["meta"].tobytes())["count"]


@pytest.mark.slow
@pytest.mark.parametrize("processes, port", [(1, 29571), (2, 29572)])
def test_sigkill_midway_then_resume_gives_the_uninterrupted_result(workspace, tmp_path, processes, port):
    import signal
    import time

    reference = evaluate_script.main(_args(workspace, tmp_path / "reference", "grid:2"))
    out = tmp_path / "killed"
    run = _launch(workspace, out, processes, port, 0.5)
    files = [out / "progress" / f"process-{rank}-of-{processes}.npz" for rank in range(processes)]
    deadline = time.monotonic() + 180
    while not all(f.exists() for f in files):  # every process saved at least once
        assert run.poll() is None, run.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no partial save appeared"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert not (out / "results.json").exists()
    saved = {f.name: _saved_count(f) for f in files if f.exists()}
    assert 0 < sum(saved.values()) < NUM_IMAGES, saved  # killed midway, after a save

    if processes == 1:
        import maft_hf.evaluation.loop as loop

        calls = []
        real_segment = loop.segment

        def counting_segment(images, *args, **kwargs):
            calls.append(len(images))
            return real_segment(images, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop, "segment", counting_segment)
            with pytest.raises(ValueError, match="belongs to another run.*ensemble_weight: saved 0.7, now 0.5"):
                evaluate_script.main(_args(workspace, out, "grid:2", "--resume", "--ensemble_weight", "0.5"))
            resumed = evaluate_script.main(_args(workspace, out, "grid:2", "--resume", "--save_every", "1"))
        assert sum(calls) == NUM_IMAGES - saved["process-0-of-1.npz"]  # only the images not saved before the kill
    else:
        with pytest.raises(ValueError, match=r"Cannot resume with 1 process\(es\).*process-\d-of-2.npz"):
            evaluate_script.main(_args(workspace, out, "grid:2", "--resume"))
        rerun = _launch(workspace, out, 2, port, 0.0, "--resume")
        output = rerun.communicate(timeout=240)[0]
        assert rerun.returncode == 0, output[-5000:]
        assert "Resuming process 0 after" in output
        resumed = json.loads((out / "results.json").read_text())

    np.testing.assert_array_equal(
        np.load(out / "confusion_matrix.npy"), np.load(tmp_path / "reference" / "confusion_matrix.npy")
    )
    assert resumed["metrics"] == reference["metrics"] and resumed["per_class"] == reference["per_class"]
    assert resumed["metrics"]["num_images"] == NUM_IMAGES


def test_unwritable_output_dir_fails_before_any_image(workspace, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"--output_dir .*a_file/out' is not a writable folder"):
        evaluate_script.main(_args(workspace, blocker / "out", "grid:2"))


def test_segment_kwargs_and_vocabulary_generators(test_split, model_and_processor, monkeypatch):
    """Extra `segment()` keywords reach every call; a `needs_vocabulary` generator gets the class names and the
    text classifier; the result equals the plain run."""
    import maft_hf.evaluation.loop as loop
    from maft_hf.proposals import load_proposal_generator as build

    model, processor = model_and_processor
    names = get_class_names(test_split)
    grid = build("grid:2")
    seen_kwargs, generator_calls = [], []

    class VocabularyGenerator:
        needs_vocabulary = True

        def __call__(self, images, class_names, text_classifier):
            generator_calls.append((list(class_names), tuple(text_classifier.shape)))
            return grid(images)

    real_segment = loop.segment

    def recording_segment(*args, marker=None, **kwargs):
        seen_kwargs.append(marker)
        return real_segment(*args, **kwargs)

    monkeypatch.setattr(loop, "segment", recording_segment)
    plain = evaluate_segmentation(model, processor, test_split, names, grid, batch_size=3, progress=False)
    both = evaluate_segmentation(
        model, processor, test_split, names, VocabularyGenerator(), batch_size=3, progress=False,
        segment_kwargs={"marker": "released"},
    )  # fmt: skip
    assert seen_kwargs == [None] * 3 + ["released"] * 3  # 7 images in batches of 3
    assert len(generator_calls) == NUM_IMAGES and generator_calls[0][0] == names
    assert generator_calls[0][1][0] == len(names)
    assert torch.equal(plain["confusion_matrix"].matrix, both["confusion_matrix"].matrix)


def test_hub_style_dataset_reads_its_id2label_json(workspace, test_split, tmp_path):
    """A dataset loaded with load_dataset that carries no names in its features finds the id2label.json uploaded
    beside it, so no --vocabulary is needed."""
    from datasets import Features, Image

    folder = tmp_path / "hub"
    plain = test_split.cast(Features({"image": Image(mode="RGB"), "label": Image(mode="L")}))
    plain.to_parquet(str(folder / "data" / "validation-00000-of-00001.parquet"))
    argv = _args(workspace, tmp_path / "out", "grid:2", "--dataset_name", str(folder))
    argv = argv[: argv.index("--dataset_path")] + argv[argv.index("--split") + 2 :]
    argv += ["--dataset_cache_dir", str(tmp_path / "cache")]
    with pytest.raises(ValueError, match="stores no class names .* pass --vocabulary"):
        evaluate_script.main(argv)
    names = get_class_names(test_split)
    (folder / "id2label.json").write_text(json.dumps({str(i): name for i, name in enumerate(names)}))
    record = evaluate_script.main(argv)
    assert record["per_class"]["names"] == names and record["metrics"]["num_images"] == NUM_IMAGES
