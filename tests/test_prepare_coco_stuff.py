"""scripts/prepare_coco_stuff.py on a tiny fake COCO-Stuff release laid out like the real one."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from maft_hf.data import get_class_names
from maft_hf.inference.vocabulary import load_vocabulary

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_coco_stuff.py"


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("maft_hf.cli.prepare_coco_stuff")


# raw stuffthingmaps values: 0 person, 11 (unused) , 12 stop sign, 91 banner, 181 wood, 255 unlabelled, 200 junk
RAW = np.array([[0, 0, 11, 12], [91, 91, 181, 255], [200, 0, 12, 181]], dtype=np.uint8)
EXPECTED = np.array([[0, 0, 255, 11], [80, 80, 170, 255], [255, 0, 11, 170]], dtype=np.uint8)


def write_release(root: Path, image_dir: str, label_dir: str, counts=(("train2017", 3), ("val2017", 2))):
    rng = np.random.default_rng(0)
    for split, count in counts:
        (root / image_dir.format(split=split)).mkdir(parents=True, exist_ok=True)
        (root / label_dir.format(split=split)).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            stem = f"{i + 1:012d}"
            Image.fromarray(rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)).save(
                root / image_dir.format(split=split) / f"{stem}.jpg"
            )
            Image.fromarray(np.roll(RAW, i, axis=1)).save(root / label_dir.format(split=split) / f"{stem}.png")


@pytest.mark.parametrize(
    "image_dir,label_dir",
    [("images/{split}", "annotations/{split}"), ("{split}", "stuffthingmaps_trainval2017/{split}")],
)
def test_convert_release_layouts(script, tmp_path, image_dir, label_dir):
    root = tmp_path / "cocostuff"
    write_release(root, image_dir, label_dir)
    out = tmp_path / "out"
    script.main(["--data_root", str(root), "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache")])

    dataset = load_from_disk(str(out))
    assert set(dataset) == {"train", "validation"}
    assert len(dataset["train"]) == 3 and len(dataset["validation"]) == 2
    for split in ("train", "validation"):
        for i, example in enumerate(dataset[split]):
            label = np.array(example["label"])
            assert example["label"].mode == "L" and example["image"].mode == "RGB"
            assert example["image"].size == (4, 3)
            assert np.array_equal(label, np.roll(EXPECTED, i, axis=1)), (split, i)
    # JPEG bytes are stored as they were, not re-encoded
    first = sorted((root / image_dir.format(split="train2017")).glob("*.jpg"))[0]
    stored = dataset["train"].cast_column("image", dataset["train"].features["image"].__class__(decode=False))
    assert stored[0]["image"]["bytes"] == first.read_bytes()
    names = load_vocabulary("coco_stuff_171")
    assert get_class_names(dataset["train"]) == names
    id2label = json.loads((out / "id2label.json").read_text())
    assert len(id2label) == 171 and id2label["0"] == "person" and id2label["170"] == "wood"


def test_max_images_and_split_selection(script, tmp_path):
    root = tmp_path / "cocostuff"
    write_release(root, "images/{split}", "annotations/{split}")
    dataset = script.main(
        [
            "--data_root",
            str(root),
            "--output_dir",
            str(tmp_path / "o"),
            "--splits",
            "val2017",
            "--max_images",
            "1",
            "--cache_dir",
            str(tmp_path / "cache"),
        ]
    )
    assert list(dataset) == ["validation"] and len(dataset["validation"]) == 1
    assert np.array_equal(np.array(dataset["validation"][0]["label"]), EXPECTED)


def test_parallel_conversion_keeps_order(script, tmp_path):
    root = tmp_path / "cocostuff"
    write_release(root, "images/{split}", "annotations/{split}", counts=(("train2017", 5),))
    dataset = script.main(
        [
            "--data_root",
            str(root),
            "--output_dir",
            str(tmp_path / "o"),
            "--splits",
            "train2017",
            "--num_proc",
            "2",
            "--cache_dir",
            str(tmp_path / "cache"),
        ]
    )
    labels = [np.array(example["label"]) for example in dataset["train"]]
    assert all(np.array_equal(label, np.roll(EXPECTED, i, axis=1)) for i, label in enumerate(labels))


def test_errors(script, tmp_path):
    root = tmp_path / "cocostuff"
    write_release(root, "images/{split}", "annotations/{split}")
    (root / "annotations/train2017/000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="no label map"):
        script.main(["--data_root", str(root), "--output_dir", str(tmp_path / "o"), "--splits", "train2017"])
    with pytest.raises(FileNotFoundError, match="looked in"):
        script.main(["--data_root", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        script.main(["--data_root", str(root)])  # neither --output_dir nor --push_to_hub
    with pytest.raises(SystemExit):
        script.main(["--data_root", str(root), "--push_to_hub"])  # no --hub_model_id
