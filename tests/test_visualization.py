"""Palette, colouring and overlays with a legend of the classes present."""

import numpy as np
import pytest
import torch
from PIL import Image

from maft_hf.inference.visualization import colorize, legend_entries, overlay, palette, present_classes, save_overlay

NAMES = ["sky", "grass", "road, route", "person"]


def two_class_map(height=40, width=60):
    seg = np.zeros((height, width), dtype=np.int64)
    seg[:, width // 2 :] = 2
    return seg


def test_palette_distinct_deterministic_and_prefix_stable():
    colours = palette(2000)
    assert colours.shape == (2000, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 2000
    assert np.array_equal(palette(847), colours[:847])
    assert np.array_equal(palette(847), palette(847))
    assert (0, 0, 0) not in {tuple(c) for c in colours}  # black is reserved for ignored pixels
    assert palette(0).shape == (0, 3)


def test_colorize_and_ignore_labels():
    seg = torch.tensor([[0, 1], [255, -1]])
    colours = colorize(seg, 2)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert tuple(colours[0, 0]) == tuple(palette(2)[0]) and tuple(colours[0, 1]) == tuple(palette(2)[1])
    assert tuple(colours[1, 0]) == (0, 0, 0) and tuple(colours[1, 1]) == (0, 0, 0)


def test_overlay_without_legend_keeps_size_and_blends():
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    seg = two_class_map()
    seg[0, 0] = 255  # ignored: left as the image
    result = overlay(image, seg, NAMES, alpha=0.5, legend=False)
    assert isinstance(result, Image.Image) and result.mode == "RGB" and result.size == (60, 40)
    pixels = np.asarray(result).astype(int)
    expected = np.rint(0.5 * 100 + 0.5 * palette(4)[2].astype(float)).astype(int)
    assert np.array_equal(pixels[5, 50], expected)
    assert np.array_equal(pixels[0, 0], [100, 100, 100])


def test_overlay_accepts_pil_rgba_grayscale_and_float_images():
    seg = two_class_map()
    for image in (
        Image.new("RGBA", (60, 40), (10, 20, 30, 128)),
        Image.new("L", (60, 40), 50),
        np.random.rand(40, 60, 3).astype(np.float32),
        torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8),
    ):
        result = overlay(image, seg, NAMES, legend=False)
        assert result.mode == "RGB" and result.size == (60, 40)


def test_legend_lists_present_classes_only():
    seg = two_class_map()
    assert present_classes(seg, len(NAMES)) == [0, 2]
    entries = legend_entries(seg, NAMES)
    assert [(i, name) for i, name, _ in entries] == [(0, "sky"), (2, "road, route")]

    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    result = overlay(image, seg, NAMES, alpha=1.0, legend=True)
    assert result.mode == "RGB" and result.width > 60 and result.height >= 40
    panel = {tuple(p) for p in np.asarray(result)[:, 60:].reshape(-1, 3)}
    colours = palette(len(NAMES))
    assert tuple(colours[0]) in panel and tuple(colours[2]) in panel  # swatches of present classes
    assert tuple(colours[1]) not in panel and tuple(colours[3]) not in panel  # absent classes are not listed


def test_legend_grows_for_many_classes():
    names = [f"class {i}" for i in range(30)]
    seg = np.arange(30).repeat(2).reshape(6, 10)
    result = overlay(np.zeros((6, 10, 3), np.uint8), seg, names)
    assert result.height > 6 and result.width > 10


def test_save_overlay(tmp_path):
    path = tmp_path / "out" / "overlay.png"
    returned = save_overlay(path, np.zeros((40, 60, 3), np.uint8), two_class_map(), NAMES)
    with Image.open(path) as saved:
        assert saved.size == returned.size and saved.mode == "RGB"


def test_overlay_errors():
    with pytest.raises(ValueError, match=r"\(40, 60\).*\(20, 60\)"):
        overlay(np.zeros((40, 60, 3), np.uint8), two_class_map(20, 60), NAMES)
    with pytest.raises(ValueError, match="integer"):
        overlay(np.zeros((40, 60, 3), np.uint8), two_class_map().astype(float), NAMES)
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((40, 60, 3), np.uint8), two_class_map(), NAMES, alpha=2)
