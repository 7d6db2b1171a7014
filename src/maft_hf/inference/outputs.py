"""Inputs and outputs of segmentation runs: image lists, command-line vocabularies, mask files, maps, overlays, areas.

Shared by `scripts/segment.py`, the examples and the demo. Outputs of one image `<stem>` in a folder:

- `<stem>_map.png`: the class-id map at the image's size, one grayscale PNG, 8-bit when the vocabulary has at most
  255 classes (ids 0..254, so 255 never names a class) and 16-bit otherwise; read it back with [`read_label_map`];
- `<stem>_overlay.png`: the colour overlay with a legend of the classes present ([`maft_hf.inference.visualization.overlay`]);
- `<stem>.json`: image size, file names and the pixel area of every class present ([`class_areas`]).

Example:

```python
>>> import numpy as np
>>> from maft_hf.inference.outputs import class_areas
>>> class_areas(np.array([[0, 0], [0, 2]]), ["sky", "grass", "road"])
[{'id': 0, 'name': 'sky', 'pixels': 3, 'fraction': 0.75}, {'id': 2, 'name': 'road', 'pixels': 1, 'fraction': 0.25}]
```
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..model.images import load_image
from .visualization import save_overlay
from .vocabulary import parse_vocabulary_argument  # noqa: F401  (re-exported: its home is vocabulary.py)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MASK_EXTENSIONS = (".npy", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".gif")
MAX_UINT8_CLASSES = 255  # up to this many classes the map is 8-bit and 255 stays free for "unlabelled"


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def find_images(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand image paths and folders into a list of image files.

    A folder contributes its files (not sub-folders) whose extension is one of `IMAGE_EXTENSIONS`
    (case-insensitive), sorted by name; files are kept as given, in order (their format is checked when they are
    read). Raises `ValueError` for a path that does not exist, a folder without images, and an empty result.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise ValueError(f"The folder {os.fspath(path)!r} holds no image file ({', '.join(IMAGE_EXTENSIONS)}).")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise ValueError(f"No such image file or folder: {os.fspath(path)!r}.")
    if not found:
        raise ValueError("No images were given; expected at least one image file or folder.")
    return found


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Output stems of `paths`: the file stems, with `_1`, `_2`, ... appended to repeats (`a/x.jpg`, `b/x.png`)."""
    stems, used = [], set()
    for path in paths:
        stem, candidate, count = Path(path).stem, Path(path).stem, 0
        while candidate in used:
            count += 1
            candidate = f"{stem}_{count}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def read_mask_file(path: str | os.PathLike):
    """Read user proposal masks from a file, in a form [`~maft_hf.proposals.proposals_from_user_masks`] accepts.

    - `.npy`: an `(N, H, W)` array of masks (bool, 0/1, 0..255 or float in [0, 1]) or an `(H, W)` integer label map;
    - an image (`.png`, `.bmp`, `.tif`, ...): a single-band label map (mode `"L"`, `"P"`, `"I"`, `"I;16"`; one mask per
      id, 255 = no mask) or a mode `"1"` binary image (one mask). Colour images are refused.

    Returns a numpy array or a single-band PIL image. Raises `ValueError` when the file cannot be read.
    """
    name = os.fspath(path)
    if Path(name).suffix.lower() == ".npy":
        try:
            return np.load(name, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"Cannot read mask file {name!r}: {err}") from err
    try:
        with Image.open(name) as opened:
            opened.load()
            image = opened.copy()
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read mask file {name!r}: {err}") from err
    if len(image.getbands()) != 1:
        raise ValueError(
            f"Mask image {name!r} has mode {image.mode!r}; expected a single-band label map (mode 'L', 'P', 'I' or "
            "'I;16', one mask per id, 255 = none) or a mode '1' binary mask."
        )
    return image


def find_mask_files(mask_paths: Sequence[str | os.PathLike], image_paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Pair user mask files with images: one mask file per image, in the images' order.

    `mask_paths` is one of: a single folder holding `<image stem><ext>` for every image (ext in `MASK_EXTENSIONS`,
    `.npy` first); a single file used for every image; or exactly one file per image, in order. Raises `ValueError`
    otherwise (naming the missing files).
    """
    mask_paths = [Path(p) for p in mask_paths]
    if len(mask_paths) == 1 and mask_paths[0].is_dir():
        folder, pairs, missing = mask_paths[0], [], []
        for image_path in image_paths:
            stem = Path(image_path).stem
            candidates = [folder / f"{stem}{ext}" for ext in MASK_EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
            if candidates:
                pairs.append(candidates[0])
            else:
                missing.append(stem)
        if missing:
            raise ValueError(
                f"The mask folder {os.fspath(folder)!r} has no mask file for the images {missing} (expected "
                f"<stem> with one of {', '.join(MASK_EXTENSIONS)})."
            )
        return pairs
    for path in mask_paths:
        if not path.is_file():
            raise ValueError(f"No such mask file or folder: {os.fspath(path)!r}.")
    if len(mask_paths) == 1:
        return mask_paths * len(image_paths)
    if len(mask_paths) != len(image_paths):
        raise ValueError(
            f"Expected one mask file per image ({len(image_paths)}), a single file or a folder; got {len(mask_paths)} "
            "mask files."
        )
    return mask_paths


# ---------------------------------------------------------------------------------------------------------------
# Areas
# ---------------------------------------------------------------------------------------------------------------
def _as_label_array(seg_map) -> np.ndarray:
    if isinstance(seg_map, torch.Tensor):
        seg_map = seg_map.detach().cpu().numpy()
    seg_map = np.asarray(seg_map)
    if seg_map.ndim != 2:
        raise ValueError(f"Expected a segmentation map of shape (H, W), got {seg_map.shape}.")
    if not (np.issubdtype(seg_map.dtype, np.integer) or seg_map.dtype == np.bool_):
        raise ValueError(f"Expected integer class ids in the segmentation map, got dtype {seg_map.dtype}.")
    return seg_map.astype(np.int64)


def class_pixel_counts(seg_map, num_classes: int) -> np.ndarray:
    """`(num_classes,)` int64 number of pixels of each class id in an `(H, W)` map of ids in `[0, num_classes)`."""
    labels = _as_label_array(seg_map)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Segmentation ids must lie in [0, {num_classes}) for {num_classes} classes, got values in "
            f"[{labels.min()}, {labels.max()}]."
        )
    return np.bincount(labels.ravel(), minlength=num_classes).astype(np.int64)


def areas_from_counts(counts, class_names: Sequence[str], include_empty: bool = False) -> list[dict]:
    """Per-class areas from pixel counts: `{"id", "name", "pixels", "fraction"}` by decreasing area (then id).

    `fraction` is the share of all counted pixels (0 when there are none). Classes with no pixel are left out unless
    `include_empty`.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(class_names),):
        raise ValueError(f"Expected {len(class_names)} counts (one per class), got shape {counts.shape}.")
    total = int(counts.sum())
    order = sorted(range(len(class_names)), key=lambda i: (-int(counts[i]), i))
    return [
        {
            "id": int(i),
            "name": class_names[i],
            "pixels": int(counts[i]),
            "fraction": float(counts[i]) / total if total else 0.0,
        }
        for i in order
        if include_empty or counts[i] > 0
    ]


def class_areas(seg_map, class_names: Sequence[str], include_empty: bool = False) -> list[dict]:
    """Pixel area of each class in an `(H, W)` map of ids into `class_names`.

    Returns a list of `{"id": int, "name": str, "pixels": int, "fraction": float}` (fraction of the image), largest
    first (ties by id); absent classes only with `include_empty=True`. Ids outside `[0, C)` raise `ValueError`.
    """
    return areas_from_counts(class_pixel_counts(seg_map, len(class_names)), class_names, include_empty)


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
def save_label_map(path: str | os.PathLike, seg_map, num_classes: int) -> Image.Image:
    """Save an `(H, W)` class-id map as a grayscale PNG: 8-bit for <= 255 classes, 16-bit up to 65535 classes."""
    labels = _as_label_array(seg_map)
    class_pixel_counts(labels, num_classes)  # range check
    if num_classes <= MAX_UINT8_CLASSES:
        picture = Image.fromarray(labels.astype(np.uint8))  # mode "L"
    elif num_classes <= 65535:
        picture = Image.fromarray(labels.astype(np.uint16))  # mode "I;16": a 16-bit grayscale PNG
    else:
        raise ValueError(f"A PNG map holds at most 65535 classes, got {num_classes}.")
    picture.save(path, format="PNG")
    return picture


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a map written by [`save_label_map`] back as an `(H, W)` int64 array."""
    with Image.open(path) as picture:
        return np.array(picture).astype(np.int64)


def save_segmentation(
    output_dir: str | os.PathLike,
    stem: str,
    image,
    seg_map,
    class_names: Sequence[str],
    *,
    alpha: float = 0.5,
    legend: bool = True,
    metadata: dict | None = None,
) -> dict:
    """Write `<stem>_map.png`, `<stem>_overlay.png` and `<stem>.json` of one segmented image to `output_dir`.

    Args:
        output_dir: folder (created when missing).
        stem: base name of the three files.
        image: the image (path, PIL image of any mode, `(H, W[, 3|4])` array or `(3, H, W)` tensor), converted to RGB.
        seg_map: `(H, W)` class ids in `[0, C)` at the image's size (numpy or tensor).
        class_names: the `C` class names; id `i` is `class_names[i]`.
        alpha, legend: overlay options ([`maft_hf.inference.visualization.overlay`]).
        metadata: extra JSON-serialisable entries for `<stem>.json` (e.g. the source path, the number of proposals).

    Returns:
        The record written to `<stem>.json`: `stem`, `height`, `width`, `map`, `overlay` (file names, relative to
        `output_dir`), `num_classes`, `classes` ([`class_areas`]) and the `metadata` entries.
    """
    picture = load_image(image)
    labels = _as_label_array(seg_map)
    if labels.shape != (picture.height, picture.width):
        raise ValueError(
            f"The segmentation map must have the image's size (H, W) = ({picture.height}, {picture.width}), "
            f"got {labels.shape}."
        )
    names = list(class_names)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "stem": stem,
        "height": picture.height,
        "width": picture.width,
        "map": f"{stem}_map.png",
        "overlay": f"{stem}_overlay.png",
        "num_classes": len(names),
        "classes": class_areas(labels, names),
        **(metadata or {}),
    }
    save_label_map(directory / record["map"], labels, len(names))
    save_overlay(directory / record["overlay"], picture, labels, names, alpha=alpha, legend=legend)
    with open(directory / f"{stem}.json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, ensure_ascii=False)
    return record


def write_summary(output_dir: str | os.PathLike, records: Sequence[dict], class_names: Sequence[str], **metadata):
    """Write `summary.json`: the run's `metadata`, the vocabulary, one entry per image and the areas over all images.

    `records` are the dicts returned by [`save_segmentation`]. Returns the summary dict.
    """
    names = list(class_names)
    counts = np.zeros(len(names), dtype=np.int64)
    for record in records:
        for entry in record["classes"]:
            counts[entry["id"]] += entry["pixels"]
    summary = {
        **metadata,
        "class_names": names,
        "num_images": len(records),
        "images": [{k: v for k, v in record.items() if k != "classes"} for record in records],
        "classes": areas_from_counts(counts, names),
    }
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
    return summary


__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "areas_from_counts",
    "class_areas",
    "class_pixel_counts",
    "find_images",
    "find_mask_files",
    "parse_vocabulary_argument",
    "read_label_map",
    "read_mask_file",
    "save_label_map",
    "save_segmentation",
    "unique_stems",
    "write_summary",
]
