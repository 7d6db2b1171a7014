"""The one image loader (maft_hf.model.images): the same rules wherever an image enters."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maft_hf import load_image
from maft_hf.model.images import image_size, image_to_tensor, load_images
from maft_hf.proposals import GridProposals

SCENE = Path(__file__).resolve().parents[1] / "examples" / "images" / "scene.png"


def write_png16(path, array: np.ndarray) -> None:
    """A 16-bit PNG written by hand from the PNG specification (PIL cannot write 16-bit RGB)."""
    height, width = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    rows = array.astype(">u2").reshape(height, -1).tobytes()
    stride = len(rows) // height
    raw = b"".join(b"\x00" + rows[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_16_bit_grayscale_png_equals_the_8_bit_original(tmp_path):
    gray = np.asarray(Image.open(SCENE).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # PIL writes mode I;16
    loaded = np.asarray(load_image(tmp_path / "gray16.png")).astype(int)
    assert loaded.shape == (*gray.shape, 3)
    assert np.abs(loaded - gray[..., None]).max() <= 1
    assert len(np.unique(loaded)) > 10  # not a saturated (all 255) image


def test_16_bit_rgb_png_and_uint16_arrays_equal_the_8_bit_original(tmp_path):
    rgb = np.asarray(Image.open(SCENE).convert("RGB"))
    sixteen = rgb.astype(np.uint16) * 257 + 100  # low bits must not matter
    write_png16(tmp_path / "rgb16.png", sixteen)
    assert np.abs(np.asarray(load_image(tmp_path / "rgb16.png")).astype(int) - rgb).max() <= 1
    assert np.abs(np.asarray(load_image(sixteen)).astype(int) - rgb).max() <= 1


def test_exif_orientation_6_is_applied(tmp_path):
    array = np.zeros((40, 64, 3), dtype=np.uint8)
    array[:, :32] = (255, 0, 0)  # left half red, right half blue
    array[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "photo.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    stored = np.asarray(Image.open(path).convert("RGB"))  # the pixels as stored, 40 x 64
    expected = np.rot90(stored, k=-1)  # clockwise: the stored left (red) half becomes the top
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (64, 40, 3) and np.array_equal(loaded, expected)
    assert loaded[5, 20, 0] > 200 and loaded[60, 20, 2] > 200
    assert image_size(path) == (64, 40)
    assert np.array_equal(np.asarray(load_image(Image.open(path))), expected)  # an opened PIL image too
    assert np.array_equal(np.asarray(load_image({"bytes": path.read_bytes(), "path": None})), expected)
    # every entry point follows the same rule: a proposal source sees the upright image
    assert tuple(GridProposals(2)([str(path)])[0].masks.shape[-2:]) == (64, 40)


def test_input_rules():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.float32) / 255.0)), rgb)  # floats in [0, 1]
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.float64))), rgb)  # floats in [0, 255]
    assert np.array_equal(np.asarray(load_image(torch.from_numpy(rgb).permute(2, 0, 1))), rgb)  # (3, H, W)
    assert load_image(Image.fromarray(rgb).convert("RGBA")).mode == "RGB"
    assert np.array_equal(np.asarray(load_image(rgb[..., 0]))[..., 1], rgb[..., 0])  # grayscale -> 3 equal channels
    assert np.array_equal(image_to_tensor(rgb).numpy(), rgb.transpose(2, 0, 1))
    assert image_size(rgb) == (8, 9) and image_size(torch.zeros(3, 8, 9)) == (8, 9)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    assert np.array_equal(np.asarray(load_image({"bytes": buffer.getvalue(), "path": "x.png"})), rgb)
    batch = load_images(torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2))
    assert len(batch) == 2 and np.array_equal(np.asarray(batch[1]), rgb)
    with pytest.raises(ValueError, match="before normalisation"):
        load_image(np.random.default_rng(0).normal(size=(8, 8, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, 3\) or \(H, W, 4\)"):
        load_image(np.zeros((8, 8, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="Cannot read image file"):
        load_image(__file__)
    with pytest.raises(ValueError, match="No images"):
        load_images([])
