"""Every script in examples/ runs offline against tiny random local checkpoints (MAFT, Mask2Former, SAM)."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maft_hf.segmentation_io import read_label_map
from maft_hf.vocabulary import load_vocabulary

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
    assert {p.name for p in scripts} >= {"segment_image.py", "custom_vocabulary.py", "sam_proposals.py", "own_masks.py"}
    for script in scripts:
        assert len(script.read_text().splitlines()) < 40, script.name
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
