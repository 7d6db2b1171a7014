"""scripts/segment.py end to end (tiny random MAFT, Mask2Former and SAM, all loaded by path offline) and the helpers of
maft_hf.inference.outputs: vocabularies from the command line, image and mask files, maps, overlays, areas."""

import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maft_hf import load_image
from maft_hf.inference.outputs import (
    class_areas,
    find_images,
    find_mask_files,
    parse_vocabulary_argument,
    read_label_map,
    save_label_map,
    save_segmentation,
    unique_stems,
)
from maft_hf.inference.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "segment.py"
SCENE = REPO / "examples" / "images" / "scene.png"
SYNTHETIC = load_vocabulary("synthetic")


def _load_cli():
    return importlib.import_module("maft_hf.cli.segment")


cli = _load_cli()


def random_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three images of different sizes and modes: the bundled palette scene, a non-square RGB one, an RGBA one."""
    folder = tmp_path_factory.mktemp("images")
    random_image(45, 61, seed=1).save(folder / "noise.png")
    random_image(40, 36, seed=2).convert("RGBA").save(folder / "square_ish.png")
    Image.open(SCENE).resize((96, 96)).save(folder / "scene.png")
    return folder


def run_cli(checkpoint, inputs, output_dir, *extra):
    args = ["--model", str(checkpoint), "--offline", "--images", *map(str, inputs), "--output_dir", str(output_dir)]
    return cli.main(args + [str(item) for item in extra])


def read_outputs(output_dir, stem):
    record = json.loads((Path(output_dir) / f"{stem}.json").read_text())
    return read_label_map(Path(output_dir) / f"{stem}_map.png"), record


# ---------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------
def test_mask2former_end_to_end(varied_tiny_checkpoint, tiny_mask2former_dir, images, tmp_path):
    summary = run_cli(
        varied_tiny_checkpoint, [images], tmp_path, "--vocabulary", "synthetic",
        "--proposals", f"mask2former:{tiny_mask2former_dir}", "--batch_size", "2",
    )  # fmt: skip
    assert summary["num_images"] == 3 and summary["class_names"] == SYNTHETIC
    totals = np.zeros(len(SYNTHETIC), dtype=np.int64)
    for path in sorted(images.iterdir()):
        picture = Image.open(path)
        seg, record = read_outputs(tmp_path, path.stem)
        assert seg.shape == (picture.height, picture.width) == (record["height"], record["width"])
        assert seg.min() >= 0 and seg.max() < len(SYNTHETIC)
        assert record["num_proposals"] == 8 and record["image"] == str(path)
        counts = np.bincount(seg.ravel(), minlength=len(SYNTHETIC))
        assert {a["id"]: a["pixels"] for a in record["classes"]} == {i: c for i, c in enumerate(counts) if c}
        assert sum(a["fraction"] for a in record["classes"]) == pytest.approx(1.0)
        assert all(a["name"] == SYNTHETIC[a["id"]] for a in record["classes"])
        overlay = Image.open(tmp_path / f"{path.stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.width > picture.width and overlay.height >= picture.height
        totals += counts
    assert {a["id"]: a["pixels"] for a in summary["classes"]} == {i: c for i, c in enumerate(totals) if c}
    assert json.loads((tmp_path / "summary.json").read_text())["proposals"].startswith("mask2former:")


@pytest.mark.parametrize("weight", [0.0, 0.4])
def test_ensemble_weight_reaches_segment(weight, tiny_checkpoint, tiny_mask2former_dir, tmp_path, monkeypatch):
    calls = []

    def recording_segment(*args, **kwargs):
        calls.append(kwargs)
        return cli_segment(*args, **kwargs)

    cli_segment = cli.segment
    monkeypatch.setattr(cli, "segment", recording_segment)
    summary = run_cli(
        tiny_checkpoint, [SCENE], tmp_path, "--vocabulary", "sky,car,tree",
        "--proposals", f"mask2former:{tiny_mask2former_dir}", "--ensemble_weight", weight,
    )  # fmt: skip
    assert [call["ensemble_weight"] for call in calls] == [weight] and summary["ensemble_weight"] == weight
    generator = calls[0]["proposal_generator"]  # segment() gets the generator, so its class scores join Eq. 9
    assert generator([load_image(SCENE)])[0].class_names[:3] == ["sky", "grass", "car"]


@pytest.mark.parametrize("source", ["sam", "mask2former"])
def test_batched_equals_one_by_one(
    source, varied_tiny_checkpoint, tiny_sam_dir, tiny_mask2former_dir, images, tmp_path
):
    if source == "sam":
        proposals = ["--proposals", f"sam:{tiny_sam_dir}", "--proposal_option", "points_per_side=4"]
    else:
        proposals = ["--proposals", f"mask2former:{tiny_mask2former_dir}"]
    for batch_size in (3, 1):
        run_cli(
            varied_tiny_checkpoint, [images], tmp_path / f"b{batch_size}", "--vocabulary", "synthetic",
            *proposals, "--batch_size", batch_size,
        )  # fmt: skip
    classes_seen = set()
    for path in sorted(images.iterdir()):
        batched, _ = read_outputs(tmp_path / "b3", path.stem)
        single, record = read_outputs(tmp_path / "b1", path.stem)
        assert batched.shape == (Image.open(path).height, Image.open(path).width)
        np.testing.assert_array_equal(batched, single)
        assert batched.max() < len(SYNTHETIC)
        classes_seen |= set(np.unique(batched).tolist())
    assert len(classes_seen) > 1  # the maps are not trivially constant


@pytest.mark.parametrize(
    "vocabulary, expected",
    [
        ("tree, car,sky", ["tree", "car", "sky"]),
        ("pascal_voc_20", load_vocabulary("pascal_voc_20")),
        ("FILE", ["sky", "grass, lawn", "car"]),
    ],
)
def test_vocabularies(vocabulary, expected, varied_tiny_checkpoint, tmp_path):
    if vocabulary == "FILE":
        vocabulary = tmp_path / "classes.txt"
        vocabulary.write_text("# my classes\nsky\ngrass, lawn\n\ncar\n")
    summary = run_cli(
        varied_tiny_checkpoint, [SCENE], tmp_path / "out", "--vocabulary", vocabulary, "--proposals", "grid:3"
    )
    assert summary["class_names"] == expected
    seg, record = read_outputs(tmp_path / "out", "scene")
    assert seg.shape == (240, 240) and 0 <= seg.min() and seg.max() < len(expected)
    assert record["num_classes"] == len(expected) and record["num_proposals"] == 9


def test_user_masks_folder_and_resized_masks(varied_tiny_checkpoint, tmp_path, caplog):
    masks = tmp_path / "masks"
    masks.mkdir()
    label_map = np.zeros((60, 60), dtype=np.uint8)  # a quarter of the 240 x 240 scene: resized, with a warning
    label_map[:20], label_map[40:, 30:] = 3, 255  # ids 0 and 3; 255 = no mask
    Image.fromarray(label_map).save(masks / "scene.png")
    binary = np.zeros((2, 45, 61), dtype=bool)
    binary[0, :20], binary[1, 20:] = True, True
    np.save(masks / "noise.npy", binary)
    random_image(45, 61).save(tmp_path / "noise.png")
    with caplog.at_level(logging.WARNING):
        run_cli(
            varied_tiny_checkpoint, [SCENE, tmp_path / "noise.png"], tmp_path / "out",
            "--vocabulary", "synthetic", "--masks", masks,
        )  # fmt: skip
    assert "resized bilinearly" in caplog.text and "scene.png" in caplog.text and "noise.npy" not in caplog.text
    seg, record = read_outputs(tmp_path / "out", "scene")
    assert seg.shape == (240, 240) and record["num_proposals"] == 2 and record["masks"].endswith("scene.png")
    seg, record = read_outputs(tmp_path / "out", "noise")
    assert seg.shape == (45, 61) and record["num_proposals"] == 2
    # one region per mask: every pixel of a region gets the class of the mask covering it
    assert len(np.unique(seg[:20])) == 1 and len(np.unique(seg[20:])) == 1


def test_grayscale_and_rgba_images_are_converted_to_rgb(varied_tiny_checkpoint, tmp_path):
    rgb = random_image(30, 50, seed=3)
    gray = rgb.convert("L")
    gray.convert("RGB").save(tmp_path / "gray_as_rgb.png")
    gray.save(tmp_path / "gray.png")
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50), dtype=np.uint8)))
    rgba.save(tmp_path / "rgba.png")
    rgb.save(tmp_path / "rgb.png")
    names = [tmp_path / f"{n}.png" for n in ("gray_as_rgb", "gray", "rgba", "rgb")]
    run_cli(varied_tiny_checkpoint, names, tmp_path / "out", "--vocabulary", "synthetic", "--proposals", "grid:3")
    maps = {path.stem: read_outputs(tmp_path / "out", path.stem)[0] for path in names}
    np.testing.assert_array_equal(maps["gray"], maps["gray_as_rgb"])  # L -> RGB by channel replication
    np.testing.assert_array_equal(maps["rgba"], maps["rgb"])  # alpha dropped


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------
def bad_run(checkpoint, tmp_path, inputs, *extra):
    with pytest.raises(ValueError) as info:
        run_cli(checkpoint, inputs, tmp_path / "out", *extra)
    return str(info.value)


def test_bad_images(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    message = bad_run(tiny_checkpoint, tmp_path, [SCENE, broken], "--vocabulary", "sky,car", "--proposals", "grid:2")
    assert "Cannot read image file" in message and "broken.png" in message
    message = bad_run(tiny_checkpoint, tmp_path, [tmp_path / "missing.jpg"], "--vocabulary", "a,b", "--masks", SCENE)
    assert "No such image file or folder" in message and "missing.jpg" in message
    (tmp_path / "empty").mkdir()
    message = bad_run(tiny_checkpoint, tmp_path, [tmp_path / "empty"], "--vocabulary", "a,b", "--proposals", "grid:2")
    assert "holds no image file" in message


@pytest.mark.parametrize(
    "vocabulary, message",
    [
        ("", "is empty"),
        (" , ", "is empty"),
        ("sky,Sky", "duplicate class names"),
        ("sky,,car", "index 1 is empty"),
        ("my_classes.txt", "does not exist"),
    ],
)
def test_bad_vocabulary(vocabulary, message, tiny_checkpoint, tmp_path):
    assert message in bad_run(tiny_checkpoint, tmp_path, [SCENE], "--vocabulary", vocabulary, "--proposals", "grid:2")


@pytest.mark.parametrize(
    "masks, message",
    [
        (np.zeros((0, 240, 240), dtype=bool), "N = 0"),
        (np.full((240, 240), 255, dtype=np.uint8), "no id other than ignore_index"),
        (np.full((2, 240, 240), 2.0, dtype=np.float32), "[0, 1]"),
        ("rgb", "expected a single-band label map"),
    ],
)
def test_bad_masks(masks, message, tiny_checkpoint, tmp_path):
    if isinstance(masks, str):
        path = tmp_path / "masks.png"
        random_image(240, 240).save(path)
    else:
        path = tmp_path / "masks.npy"
        np.save(path, masks)
    text = bad_run(tiny_checkpoint, tmp_path, [SCENE], "--vocabulary", "sky,car", "--masks", path)
    assert message in text and "masks" in text


def test_bad_options(tiny_checkpoint, tmp_path):
    common = ["--vocabulary", "sky,car", "--proposals", "grid:2"]
    assert "--batch_size" in bad_run(tiny_checkpoint, tmp_path, [SCENE], *common, "--batch_size", "0")
    assert "--ensemble_weight" in bad_run(tiny_checkpoint, tmp_path, [SCENE], *common, "--ensemble_weight", "1.5")
    assert "KEY=VALUE" in bad_run(tiny_checkpoint, tmp_path, [SCENE], *common, "--proposal_option", "k")
    assert "Unknown proposal source" in bad_run(
        tiny_checkpoint, tmp_path, [SCENE], "--vocabulary", "sky", "--proposals", "detr:x"
    )
    assert "does not exist" in bad_run(tmp_path / "no-checkpoint", tmp_path, [SCENE], *common)
    with pytest.raises(SystemExit):  # argparse: exactly one of --proposals / --masks
        run_cli(tiny_checkpoint, [SCENE], tmp_path / "out", "--vocabulary", "sky")


@pytest.mark.slow
def test_command_line_error_exit(tmp_path):
    """The script run as a program reports a ValueError as one line on stderr and exit status 1."""
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tmp_path), "--offline", "--images", str(SCENE),
         "--vocabulary", "", "--proposals", "grid:2", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert process.returncode == 1
    assert "segment.py: error: The vocabulary '' is empty" in process.stderr and "Traceback" not in process.stderr


# ---------------------------------------------------------------------------------------------------------------
# maft_hf.inference.outputs
# ---------------------------------------------------------------------------------------------------------------
def test_parse_vocabulary_argument(tmp_path, monkeypatch, caplog):
    assert parse_vocabulary_argument(" sky ,grass") == ["sky", "grass"]
    assert parse_vocabulary_argument("coco_stuff_156_seen") == load_vocabulary("coco_stuff_156_seen")
    path = tmp_path / "a,b.txt"  # an existing file is never split, even with a comma in its name
    path.write_text("building, edifice\nsky\n")
    assert parse_vocabulary_argument(str(path)) == ["building, edifice", "sky"]
    with caplog.at_level(logging.WARNING):
        assert parse_vocabulary_argument("ade20k150") == ["ade20k150"]
    assert "single class" in caplog.text and "'ade20k_150'" in caplog.text


def test_class_areas():
    seg = np.array([[0, 0, 2], [2, 2, 2]])
    assert class_areas(seg, ["a", "b", "c"]) == [
        {"id": 2, "name": "c", "pixels": 4, "fraction": 4 / 6},
        {"id": 0, "name": "a", "pixels": 2, "fraction": 2 / 6},
    ]
    assert [a["pixels"] for a in class_areas(seg, ["a", "b", "c"], include_empty=True)] == [4, 2, 0]
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 2\)"):
        class_areas(seg, ["a", "b"])
    with pytest.raises(ValueError, match="integer class ids"):
        class_areas(seg.astype(float), ["a", "b", "c"])


@pytest.mark.parametrize("num_classes, mode", [(255, "L"), (256, "I;16"), (847, "I;16")])
def test_label_map_bit_depth(num_classes, mode, tmp_path):
    seg = np.random.default_rng(0).integers(0, num_classes, (7, 9))
    seg[0, 0] = num_classes - 1
    save_label_map(tmp_path / "map.png", seg, num_classes)
    assert Image.open(tmp_path / "map.png").mode == mode
    np.testing.assert_array_equal(read_label_map(tmp_path / "map.png"), seg)


def test_save_segmentation(tmp_path):
    image = random_image(6, 8).convert("RGBA")
    seg = np.zeros((6, 8), dtype=np.int64)
    seg[:, 5:] = 1
    record = save_segmentation(tmp_path, "x", image, seg, ["sky", "car"], metadata={"image": "x.png"})
    assert record == json.loads((tmp_path / "x.json").read_text())
    assert record["classes"][0] == {"id": 0, "name": "sky", "pixels": 30, "fraction": 30 / 48}
    assert record["image"] == "x.png" and (record["height"], record["width"]) == (6, 8)
    assert Image.open(tmp_path / "x_overlay.png").size[1] >= 6
    with pytest.raises(ValueError, match=r"image's size \(H, W\) = \(6, 8\)"):
        save_segmentation(tmp_path, "y", image, seg[:5], ["sky", "car"])


def test_find_images_stems_and_mask_files(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        random_image(4, 4).save(tmp_path / folder / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("skip me")
    (tmp_path / "a" / "Y.JPG").write_bytes((tmp_path / "a" / "x.png").read_bytes())
    found = find_images([tmp_path / "a", tmp_path / "b" / "x.png"])
    assert found == [tmp_path / "a" / "Y.JPG", tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    assert unique_stems(found) == ["Y", "x", "x_1"]
    masks = tmp_path / "masks"
    masks.mkdir()
    np.save(masks / "x.npy", np.zeros((4, 4), dtype=np.int64))
    assert find_mask_files([masks], found[1:]) == [masks / "x.npy"] * 2
    with pytest.raises(ValueError, match=r"no mask file for the images \['Y'\]"):
        find_mask_files([masks], found)
    assert find_mask_files([masks / "x.npy"], found) == [masks / "x.npy"] * 3
    with pytest.raises(ValueError, match="one mask file per image"):
        find_mask_files([masks / "x.npy"] * 2, found)
