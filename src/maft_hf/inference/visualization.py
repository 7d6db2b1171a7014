"""Colour semantic maps and draw them over images, with a legend of the classes present. The palette is
prefix-stable (`palette(k)[:j] == palette(j)`): golden-ratio hues, saturation / brightness tiers of coprime periods."""

from __future__ import annotations

import colorsys
import functools
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..model.images import load_image

_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949
_SATURATIONS = (0.85, 0.55, 1.0, 0.7)
_VALUES = (0.95, 0.7, 0.85, 0.55, 1.0)
IGNORE_COLOR = (0, 0, 0)


def palette(num_classes: int) -> np.ndarray:
    """`(num_classes, 3)` uint8 RGB colours, all distinct, deterministic and prefix-stable."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
    return np.array(_palette_colours(num_classes), dtype=np.uint8).reshape(num_classes, 3)


@functools.lru_cache(maxsize=8)
def _palette_colours(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    colours: list[tuple[int, int, int]] = []
    used = {IGNORE_COLOR, (255, 255, 255)}
    for index in range(num_classes):
        hue = (0.05 + index * _GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = _SATURATIONS[index % len(_SATURATIONS)]
        value = _VALUES[index % len(_VALUES)]
        while True:
            colour = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
            if colour not in used:
                break
            hue = (hue + 1.0 / 997) % 1.0  # rounding collision: nudge the hue until the colour is new
        used.add(colour)
        colours.append(colour)
    return tuple(colours)


def label_array(seg_map) -> np.ndarray:
    """An `(H, W)` map of integer (or bool) class ids as an int64 numpy array; `ValueError` otherwise."""
    seg_map = np.asarray(seg_map.detach().cpu().numpy() if isinstance(seg_map, torch.Tensor) else seg_map)
    if seg_map.ndim != 2:
        raise ValueError(f"Expected a segmentation map of shape (H, W), got {seg_map.shape}.")
    if not (np.issubdtype(seg_map.dtype, np.integer) or seg_map.dtype == np.bool_):
        raise ValueError(f"Expected integer class ids in the segmentation map, got dtype {seg_map.dtype}.")
    return seg_map.astype(np.int64)


def colorize(seg_map, num_classes: int) -> np.ndarray:
    """Colour a `(H, W)` map of class ids: `(H, W, 3)` uint8 RGB; ids outside `[0, num_classes)` are black."""
    seg_map = label_array(seg_map)
    colours = np.concatenate([palette(num_classes), np.array([IGNORE_COLOR], dtype=np.uint8)])
    index = np.where((seg_map >= 0) & (seg_map < num_classes), seg_map, num_classes)
    return colours[index]


def present_classes(seg_map, num_classes: int) -> list[int]:
    """Sorted class ids in `[0, num_classes)` that occur in `seg_map`."""
    ids = np.unique(label_array(seg_map))
    return [int(i) for i in ids if 0 <= i < num_classes]


def legend_entries(seg_map, class_names) -> list[tuple[int, str, tuple[int, int, int]]]:
    """`(class id, name, RGB colour)` for each class present in `seg_map`, by class id."""
    colours = palette(len(class_names))
    return [(i, class_names[i], tuple(int(v) for v in colours[i])) for i in present_classes(seg_map, len(class_names))]


def _drawable_text(draw: ImageDraw.ImageDraw, text: str, font) -> str:
    """`text`, or its ASCII rendering when the font cannot encode it (PIL's bitmap fallback font)."""
    try:
        draw.textbbox((0, 0), text, font=font)
        return text
    except UnicodeError:
        return text.encode("ascii", "replace").decode("ascii")


def _draw_legend(entries, height: int, font) -> Image.Image:
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [_drawable_text(probe, name, font) for _, name, _ in entries]
    boxes = [probe.textbbox((0, 0), text, font=font) for text in texts]
    line = max([b[3] - b[1] for b in boxes] + [10])
    row, swatch, pad = line + 6, line + 2, 6
    width = pad * 3 + swatch + max([b[2] - b[0] for b in boxes] + [1])
    panel = Image.new("RGB", (width, max(height, pad * 2 + row * len(entries))), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for position, ((_, _, colour), name) in enumerate(zip(entries, texts)):
        top = pad + position * row
        draw.rectangle([pad, top, pad + swatch - 1, top + swatch - 1], fill=colour, outline=(0, 0, 0))
        draw.text((pad * 2 + swatch, top), name, fill=(0, 0, 0), font=font)
    return panel


def overlay(image, seg_map, class_names, alpha: float = 0.5, legend: bool = True) -> Image.Image:
    """Blend the coloured map (`(H, W)` class ids at the image's size; ids outside `[0, C)` left unblended) over the
    image (anything [`load_image`] reads) with opacity `alpha`; `legend` appends a panel of the classes present on
    the right. Returns an RGB PIL image."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    picture = load_image(image)
    seg = label_array(seg_map)
    if seg.shape != (picture.height, picture.width):
        raise ValueError(
            f"seg_map must have the image's size (H, W) = ({picture.height}, {picture.width}), got {seg.shape}."
        )
    base = np.asarray(picture, dtype=np.float32)
    colours = colorize(seg, len(class_names)).astype(np.float32)
    labelled = ((seg >= 0) & (seg < len(class_names)))[..., None]
    blended = np.where(labelled, (1.0 - alpha) * base + alpha * colours, base)
    result = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")
    if not legend:
        return result
    entries = legend_entries(seg, class_names)
    panel = _draw_legend(entries, result.height, ImageFont.load_default())
    canvas = Image.new("RGB", (result.width + panel.width, max(result.height, panel.height)), (255, 255, 255))
    canvas.paste(result, (0, 0))
    canvas.paste(panel, (result.width, 0))
    return canvas


def save_overlay(path: str | os.PathLike, image, seg_map, class_names, **kwargs) -> Image.Image:
    """[`overlay`] saved to `path` (format from the extension); returns the image."""
    result = overlay(image, seg_map, class_names, **kwargs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    result.save(path)
    return result
