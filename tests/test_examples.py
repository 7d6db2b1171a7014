"""Every script in examples/ runs offline against tiny random local checkpoints (MAFT, Mask2Former, SAM)."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maft_hf.inference.outputs import read_label_map
from maft_hf.inference.vocabulary import load_vocabulary

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m 'not slow'

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCENE_SIZE = (240, 240)  # (H, W) of examples/images/scene.png


def run_example(name, monkeypatch, *args):
    """Run examples/<name> as `__main__` from the repository root (its default paths are relative to it)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *map(str, args)])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def check_overlay(path):
    overlay = Image.open(path)
    assert overlay.mode == "RGB"
    assert overlay.width > SCENE_SIZE[1] and overlay.height >= SCENE_SIZE[0]  # image + legend panel


def test_examples_are_short():
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert {p.name for p in scripts} >= {
        "segment_image.py", "custom_vocabulary.py", "sam_proposals.py", "own_masks.py", "finetune_own_dataset.py",
        "evaluate.py",
    }  # fmt: skip
    for script in scripts:
        limit = 50 if script.name == "finetune_own_dataset.py" else 40
        assert len(script.read_text().splitlines()) < limit, script.name
    assert Image.open(EXAMPLES / "images" / "scene.png").size == SCENE_SIZE[::-1]


def test_segment_image(tiny_checkpoint, tiny_mask2former_dir, tmp_path, monkeypatch, capsys):
    output = tmp_path / "overlay.png"
    run_example(
        "segment_image.py", monkeypatch, "--model", tiny_checkpoint, "--mask2former", tiny_mask2former_dir,
        "--offline", "--classes", "sky", "car", "tree", "--output", output,
    )  # fmt: skip
    check_overlay(output)
    assert f"Saved {output}" in capsys.readouterr().out


def test_custom_vocabulary(tiny_checkpoint, tiny_mask2former_dir, tmp_path, monkeypatch, capsys):
    run_example(
        "custom_vocabulary.py", monkeypatch, "--model", tiny_checkpoint, "--mask2former", tiny_mask2former_dir,
        "--offline", "--cache_dir", tmp_path / "cache", "--output_dir", tmp_path / "out",
    )  # fmt: skip
    names = load_vocabulary(str(EXAMPLES / "classes.txt"))
    assert "grass, lawn" in names
    record = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert record["num_classes"] == len(names) and all(a["name"] == names[a["id"]] for a in record["classes"])
    assert read_label_map(tmp_path / "out" / "scene_map.png").shape == SCENE_SIZE
    check_overlay(tmp_path / "out" / "scene_overlay.png")
    assert list((tmp_path / "cache").glob("*.safetensors"))  # the text classifier was cached on disk
    printed = capsys.readouterr().out
    assert all(f"{a['name']:>20s}:" in printed for a in record["classes"])


def test_sam_proposals(tiny_checkpoint, tiny_sam_dir, tmp_path, monkeypatch, capsys):
    run_example(
        "sam_proposals.py", monkeypatch, "--model", tiny_checkpoint, "--sam", tiny_sam_dir, "--points_per_side", 4,
        "--offline", "--output_dir", tmp_path,
    )  # fmt: skip
    check_overlay(tmp_path / "scene_overlay.png")
    assert read_label_map(tmp_path / "scene_map.png").shape == SCENE_SIZE
    assert "SAM gave" in capsys.readouterr().out


def test_own_masks(varied_tiny_checkpoint, tmp_path, monkeypatch, capsys):
    run_example("own_masks.py", monkeypatch, "--model", varied_tiny_checkpoint, "--offline", "--output_dir", tmp_path)
    check_overlay(tmp_path / "scene_overlay.png")
    regions = np.array(Image.open(EXAMPLES / "images" / "scene_regions.png"))
    seg = read_label_map(tmp_path / "scene_map.png")
    assert seg.shape == regions.shape == SCENE_SIZE
    classes = ["sky", "grass", "road", "wall", "tree", "person", "car"]  # the example's default --classes
    printed = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("mask ")]
    assert len(printed) == len(np.unique(regions))
    for region, name in zip(np.unique(regions), printed):  # binary masks tiling the image: one class per region
        assert np.unique(seg[regions == region]).tolist() == [classes.index(name)]


# ---- Fine-tuning and evaluation examples ------------------------------------------------------------------------
TINY_TRAINING = ("--proposals", "grid:4", "--crop_size", 64, "--short_side", 64, "--per_device_train_batch_size", 2)


@pytest.fixture
def isolated_finetune(monkeypatch):
    """`scripts/finetune.py --offline` sets the Hub's offline flags (environment and imported modules) and `main`
    creates an Accelerator: restore both afterwards."""
    import datasets.config
    import huggingface_hub.constants
    from accelerate.state import AcceleratorState

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    for module, name in (
        (huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ):  # fmt: skip
        monkeypatch.setattr(module, name, getattr(module, name))
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def vision_weights(path):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(Path(path) / "model.safetensors")).items() if "vision_model" in k}


def test_finetune_own_dataset_files(tiny_checkpoint, tmp_path, isolated_finetune, monkeypatch, capsys):
    """Your own folders: JPEG images, palette ("P") label maps whose indices are the class ids, a commented
    classes.txt; files of other kinds in the images folder are skipped. The dataset keeps exact ids and the names."""
    from datasets import load_from_disk

    from maft_hf import MaskAwareCLIPModel
    from maft_hf.data import get_class_names, make_synthetic_dataset

    mine, classes = tmp_path / "mine", ["sky", "grass", "water", "road", "wall", "tree", "person", "car"]
    (mine / "photos").mkdir(parents=True)
    (mine / "annotations").mkdir()
    (mine / "photos" / "notes.txt").write_text("not an image")
    (mine / "names.txt").write_text("# my classes\n" + "\n".join(classes) + "\n")
    expected = {}
    for number, row in enumerate(make_synthetic_dataset(3, 64, seed=5)):
        row["image"].save(mine / "photos" / f"shot{number}.jpg")
        ids = np.array(row["label"])
        palette = Image.frombytes("P", ids.shape[::-1], ids.tobytes())
        palette.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist())
        palette.save(mine / "annotations" / f"shot{number}.png")
        expected[f"shot{number}"] = ids
    output = tmp_path / "finetuned"
    run_example(
        "finetune_own_dataset.py", monkeypatch, "--model", tiny_checkpoint, "--images", mine / "photos", "--labels",
        mine / "annotations", "--classes", mine / "names.txt", "--data_dir", tmp_path / "data", "--output_dir", output,
        "--max_train_steps", 2, "--offline", "--cpu", *TINY_TRAINING,
    )  # fmt: skip
    dataset = load_from_disk(str(tmp_path / "data" / "dataset"))
    assert list(dataset) == ["train"] and get_class_names(dataset) == classes
    assert dataset["train"].num_rows == 3
    for number, row in enumerate(dataset["train"]):
        assert row["label"].mode == "P" and row["image"].size == (64, 64)
        np.testing.assert_array_equal(np.array(row["label"]), expected[f"shot{number}"])
    assert len(json.loads((output / "train_losses.json").read_text())) == 2
    assert MaskAwareCLIPModel.from_pretrained(output).config.vision_config.input_image_size == 32
    start, tuned = vision_weights(tiny_checkpoint), vision_weights(output)
    assert start.keys() == tuned.keys()
    assert any(not torch.equal(start[k], tuned[k]) for k in start)  # the image encoder trained
    assert f"Saved {output} after 2 steps" in capsys.readouterr().out


def test_finetune_own_dataset_refuses_unlabelled_images(tmp_path, monkeypatch, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for stem in ("a", "b"):
        Image.new("RGB", (16, 16)).save(tmp_path / "images" / f"{stem}.png")
    Image.new("L", (16, 16)).save(tmp_path / "labels" / "a.png")
    with pytest.raises(SystemExit):
        run_example("finetune_own_dataset.py", monkeypatch, "--images", tmp_path / "images", "--offline")
    assert "labels/b.png" in capsys.readouterr().err  # --labels defaults to labels/ next to --images


def check_printed_scores(printed, names, expected_iou):
    """The example prints `mIoU <m> on <n> images, ...` then `<name>: <IoU>` per class."""
    lines = printed.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("mIoU "))
    rows = [line.split(":") for line in lines[header + 1 : header + 1 + len(names)]]
    assert [name.strip() for name, _ in rows] == names
    np.testing.assert_allclose([float(v) for _, v in rows], expected_iou, atol=0.051)
    return float(lines[header].split()[1]), int(lines[header].split()[3])


def reference_per_class_iou(checkpoint, dataset, names, ignore_index=255, proposals="grid:4"):
    """IoU in percent per class from `segment` and a NumPy confusion matrix (nan: class absent
    from the labels and the predictions)."""
    from maft_hf import MAFTProcessor, MaskAwareCLIPModel, segment

    model, processor = MaskAwareCLIPModel.from_pretrained(checkpoint), MAFTProcessor.from_pretrained(checkpoint)
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for row in dataset:
        (result,) = segment([row["image"]], names, model, processor, proposals)
        truth, prediction = np.array(row["label"]).ravel(), result["segmentation"].numpy().ravel()
        keep = truth != ignore_index
        np.add.at(counts, (truth[keep], prediction[keep]), 1)
    union = counts.sum(0) + counts.sum(1) - np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.diag(counts) / union  # nan where union == 0


def test_evaluate_synthetic_default(varied_tiny_checkpoint, monkeypatch, capsys):
    from maft_hf.data import SYNTHETIC_CLASS_NAMES, make_synthetic_dataset

    run_example("evaluate.py", monkeypatch, "--model", varied_tiny_checkpoint, "--proposals", "grid:4", "--offline")
    names = list(SYNTHETIC_CLASS_NAMES)
    expected = reference_per_class_iou(varied_tiny_checkpoint, make_synthetic_dataset(8, 64, stream=1), names)
    miou, num_images = check_printed_scores(capsys.readouterr().out, names, expected)
    assert num_images == 8 and miou == pytest.approx(np.nanmean(expected), abs=0.006)


def test_finetune_then_evaluate(tiny_checkpoint, tmp_path, isolated_finetune, monkeypatch, capsys):
    """Out of the box (no folders: synthetic files are written), then the evaluate example on the saved dataset with a
    vocabulary file that renames the classes."""
    from datasets import load_from_disk

    data, output = tmp_path / "data", tmp_path / "finetuned"
    run_example(
        "finetune_own_dataset.py", monkeypatch, "--model", tiny_checkpoint, "--data_dir", data, "--output_dir", output,
        "--max_train_steps", 1, "--offline", "--cpu", *TINY_TRAINING,
    )  # fmt: skip
    assert len(list((data / "files" / "images").glob("*.png"))) == len(list((data / "files" / "labels").glob("*.png")))
    assert "Saved" in capsys.readouterr().out
    names = ["sky, heaven", "grass", "water", "road", "wall", "tree", "person, pedestrian", "car"]
    (tmp_path / "names.txt").write_text("\n".join(names))
    run_example(
        "evaluate.py", monkeypatch, "--model", output, "--dataset", data / "dataset", "--classes", tmp_path / "names.txt",
        "--proposals", "grid:4", "--offline",
    )  # fmt: skip
    dataset = load_from_disk(str(data / "dataset"))["train"]
    expected = reference_per_class_iou(output, dataset, names)
    miou, num_images = check_printed_scores(capsys.readouterr().out, names, expected)
    assert num_images == dataset.num_rows == 16 and miou == pytest.approx(np.nanmean(expected), abs=0.006)


def test_evaluate_16bit_labels(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """More than 255 classes: 16-bit ("I;16") label maps whose unlabelled value is 65535."""
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    from maft_hf.data import dataset_info_with_class_names

    rng = np.random.default_rng(0)
    names = ["".join("abcdefghij"[int(digit)] for digit in f"{i:03d}") for i in range(300)]
    images = [Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(2)]
    labels = [rng.integers(0, 300, (24, 32)).astype(np.uint16) for _ in range(2)]
    for label in labels:
        label[:3] = 65535
    features = Features({"image": ImageFeature(), "label": ImageFeature()})
    info = dataset_info_with_class_names(names, "", features)
    dataset = Dataset.from_dict({"image": images, "label": [Image.fromarray(x) for x in labels]}, features, info)
    dataset.save_to_disk(str(tmp_path / "big"))
    run_example(
        "evaluate.py", monkeypatch, "--model", tiny_checkpoint, "--dataset", tmp_path / "big", "--proposals", "grid:2",
        "--offline",
    )  # fmt: skip
    expected = reference_per_class_iou(tiny_checkpoint, dataset, names, ignore_index=65535, proposals="grid:2")
    miou, num_images = check_printed_scores(capsys.readouterr().out, names, expected)
    assert num_images == 2 and miou == pytest.approx(np.nanmean(expected), abs=0.006)
