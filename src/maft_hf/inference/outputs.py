"""Inputs and outputs of segmentation runs: image lists, command-line vocabularies, mask files, maps, overlays, areas.

Outputs of one image `<stem>`: `<stem>_map.png` (class ids, 8-bit for up to 255 classes so 255 never names a class,
else 16-bit), `<stem>_overlay.png` and `<stem>.json` (size, file names, [`class_areas`]). Every file is written
atomically and `<stem>.json` last, so an image whose json exists is complete. Bulk runs can write parquet chunks.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..model.images import load_image
from .visualization import label_array, overlay
from .vocabulary import parse_vocabulary_argument as parse_vocabulary_argument  # re-exported for the CLI

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_EXTENSIONS = (".txt", ".lst")  # an --images file with this suffix lists image paths, one per line
MASK_EXTENSIONS = (".npy", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".gif")
MAX_UINT8_CLASSES = 255  # up to this many classes the map is 8-bit and 255 stays free for "unlabelled"


def find_images(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Image files of `paths`: a folder's image files (not sub-folders), sorted; the paths a `.txt`/`.lst` file lists
    (one per line, blank and `#` lines skipped, relative to the list's folder); image files as given, in order."""
    found: list[Path] = []
    for path in map(Path, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
        if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            listed = [path.parent / line for line in lines if line and not line.startswith("#")]
            missing = [os.fspath(entry) for entry in listed if not entry.is_file()]
            if missing:
                raise ValueError(
                    f"The list {os.fspath(path)!r} names {len(missing)} missing files, e.g. {missing[:3]}."
                )
            found.extend(listed)
        elif path.is_dir():
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
        stem = candidate = Path(path).stem
        count = 0
        while candidate in used:
            count += 1
            candidate = f"{stem}_{count}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def read_mask_file(path: str | os.PathLike):
    """User proposal masks from a file: a `.npy` array (`(N, H, W)` masks or an `(H, W)` label map), or a single-band
    image (a label map, one mask per id, 255 = none, or a mode `"1"` mask); colour images are refused."""
    name = os.fspath(path)
    try:
        if Path(name).suffix.lower() == ".npy":
            return np.load(name, allow_pickle=False)
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
    """One mask file per image, in order, from a folder of `<image stem><ext>` files (`.npy` first), a single file for
    every image, or one file per image."""
    mask_paths = [Path(p) for p in mask_paths]
    if len(mask_paths) == 1 and mask_paths[0].is_dir():
        folder, stems = mask_paths[0], [Path(image_path).stem for image_path in image_paths]
        found = [
            next((folder / f"{s}{ext}" for ext in MASK_EXTENSIONS if (folder / f"{s}{ext}").is_file()), None)
            for s in stems
        ]
        missing = [stem for stem, path in zip(stems, found) if path is None]
        if missing:
            raise ValueError(
                f"The mask folder {os.fspath(folder)!r} has no mask file for the images {missing} (expected "
                f"<stem> with one of {', '.join(MASK_EXTENSIONS)})."
            )
        return found
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


def class_pixel_counts(seg_map, num_classes: int) -> np.ndarray:
    """`(num_classes,)` int64 number of pixels of each class id in an `(H, W)` map of ids in `[0, num_classes)`."""
    labels = label_array(seg_map)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Segmentation ids must lie in [0, {num_classes}) for {num_classes} classes, got values in "
            f"[{labels.min()}, {labels.max()}]."
        )
    return np.bincount(labels.ravel(), minlength=num_classes).astype(np.int64)


def areas_from_counts(counts, class_names: Sequence[str], include_empty: bool = False) -> list[dict]:
    """Per-class `{"id", "name", "pixels", "fraction"}` from pixel counts, by decreasing area (then id); classes
    without pixels only with `include_empty`."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(class_names),):
        raise ValueError(f"Expected {len(class_names)} counts (one per class), got shape {counts.shape}.")
    total = int(counts.sum()) or 1  # no pixel at all: every fraction is 0.0
    order = sorted(range(len(class_names)), key=lambda i: (-int(counts[i]), i))
    rows = [(int(i), int(counts[i])) for i in order if include_empty or counts[i] > 0]
    return [{"id": i, "name": class_names[i], "pixels": n, "fraction": n / total} for i, n in rows]


def class_areas(seg_map, class_names: Sequence[str], include_empty: bool = False) -> list[dict]:
    """Pixel area of each class of an `(H, W)` map of ids into `class_names` ([`areas_from_counts`])."""
    return areas_from_counts(class_pixel_counts(seg_map, len(class_names)), class_names, include_empty)


def atomic_write(path: str | os.PathLike, write) -> None:
    """`write(temporary_path)`, then rename it to `path`: a reader or a resumed run never sees a partial file."""
    directory, name = os.path.split(os.fspath(path))
    temporary = os.path.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # created by `write`
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def remove_temporary_files(directory: str | os.PathLike) -> int:
    """Delete the temporary files [`atomic_write`] leaves behind when a run is killed; returns their number."""
    leftovers = list(Path(directory).glob(".*.tmp")) if Path(directory).is_dir() else []
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)


def write_json(path: str | os.PathLike, value) -> None:
    """Write `value` as indented UTF-8 JSON, atomically."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def save_label_map(path, seg_map, num_classes: int) -> Image.Image:
    """Save an `(H, W)` class-id map as a grayscale PNG (to a path, atomically, or a file object): 8-bit for <= 255
    classes, else 16-bit."""
    labels = label_array(seg_map)
    class_pixel_counts(labels, num_classes)  # range check
    if num_classes > 65535:
        raise ValueError(f"A PNG map holds at most 65535 classes, got {num_classes}.")
    picture = Image.fromarray(labels.astype(np.uint8 if num_classes <= MAX_UINT8_CLASSES else np.uint16))
    if hasattr(path, "write"):
        picture.save(path, format="PNG")
    else:
        atomic_write(path, lambda temporary: picture.save(temporary, format="PNG"))
    return picture


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a map written by [`save_label_map`] back as an `(H, W)` int64 array."""
    with Image.open(path) as picture:
        return np.array(picture).astype(np.int64)


def save_segmentation(
    output_dir, stem: str, image, seg_map, class_names: Sequence[str], *, alpha=0.5, legend=True, metadata=None
) -> dict:
    """Write `<stem>_map.png`, `<stem>_overlay.png` and, last, `<stem>.json` of one image (`seg_map`: `(H, W)` ids at
    its size) to `output_dir`; returns the json record (sizes, file names, [`class_areas`], `metadata` entries)."""
    picture, labels, names = load_image(image), label_array(seg_map), list(class_names)
    if labels.shape != (picture.height, picture.width):
        raise ValueError(
            f"The segmentation map must have the image's size (H, W) = ({picture.height}, {picture.width}), "
            f"got {labels.shape}."
        )
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
    colours = overlay(picture, labels, names, alpha=alpha, legend=legend)
    atomic_write(directory / record["overlay"], lambda temporary: colours.save(temporary, format="PNG"))
    write_json(directory / f"{stem}.json", record)
    return record


def segmentation_done(output_dir: str | os.PathLike, stem: str) -> bool:
    """Whether [`save_segmentation`] finished `<stem>` in `output_dir` (its json, written last, exists)."""
    return (Path(output_dir) / f"{stem}.json").is_file()


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_summary(output_dir: str | os.PathLike, records: Sequence[dict], class_names: Sequence[str], **metadata):
    """Write and return `summary.json`: `metadata`, the vocabulary, the [`save_segmentation`] records, total areas."""
    images = [{k: v for k, v in record.items() if k != "classes"} for record in records]
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    path = Path(output_dir) / "summary.json"
    return _write_run_json(path, class_names, records, metadata, num_images=len(records), images=images)


def _write_run_json(path, class_names: Sequence[str], records, metadata: dict, **entries) -> dict:
    """Write and return a run's json: `metadata`, the vocabulary, `entries` and the areas over all `records`."""
    value = {**metadata, "class_names": list(class_names), **entries, "classes": total_areas(records, class_names)}
    write_json(path, value)
    return value


def total_areas(records: Iterable[dict], class_names: Sequence[str]) -> list[dict]:
    """Areas over all images from per-image `classes` lists ([`class_areas`])."""
    counts = np.zeros(len(class_names), dtype=np.int64)
    for record in records:
        for entry in record["classes"]:
            counts[entry["id"]] += entry["pixels"]
    return areas_from_counts(counts, list(class_names))


# ---- Parquet outputs of bulk runs: `data/chunk-<k>.parquet` (a datasets-loadable folder) and `manifest.json` ----
def parquet_features():
    """The `datasets.Features` of a parquet output row: the map as a PNG image (mode "L" or "I;16") and the areas."""
    from datasets import Features, Image, List, Value

    area = {"id": Value("int32"), "name": Value("string"), "pixels": Value("int64"), "fraction": Value("float64")}
    columns = "index:int64 stem:string image:string masks:string height:int32 width:int32 num_proposals:int32"
    values = {name: Value(dtype) for name, dtype in (column.split(":") for column in columns.split())}
    return Features({**values, "segmentation": Image(), "classes": List(area)})


def parquet_row(index: int, stem: str, seg_map, class_names: Sequence[str], metadata: dict) -> dict:
    """One parquet output row: the map PNG-encoded ([`save_label_map`]) and its [`class_areas`]."""
    labels = label_array(seg_map)
    buffer = io.BytesIO()
    save_label_map(buffer, labels, len(class_names))
    return {
        "index": index,
        "stem": stem,
        "image": metadata["image"],
        "masks": metadata.get("masks"),
        "height": labels.shape[0],
        "width": labels.shape[1],
        "num_proposals": metadata["num_proposals"],
        "segmentation": {"bytes": buffer.getvalue(), "path": None},
        "classes": class_areas(labels, class_names),
    }


def parquet_chunk_path(output_dir: str | os.PathLike, chunk: int) -> Path:
    return Path(output_dir) / "data" / f"chunk-{chunk:06d}.parquet"


def write_parquet_chunk(output_dir: str | os.PathLike, chunk: int, rows: Sequence[dict]) -> Path:
    """Write the rows of chunk `chunk` to `data/chunk-<chunk>.parquet`, atomically."""
    from datasets import Dataset

    path = parquet_chunk_path(output_dir, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = Dataset.from_list(list(rows), features=parquet_features())
    atomic_write(path, table.to_parquet)
    return path


def write_parquet_manifest(output_dir: str | os.PathLike, num_chunks: int, class_names: Sequence[str], **metadata):
    """Write and return `manifest.json` of a parquet output: `metadata`, the chunks with their rows, total areas."""
    import pyarrow.parquet as pq

    chunks, totals = [], []
    for chunk in range(num_chunks):
        path = parquet_chunk_path(output_dir, chunk)
        if not path.is_file():
            raise ValueError(f"The parquet chunk {os.fspath(path)!r} is missing; run again with --resume.")
        table = pq.read_table(path, columns=["index", "classes"])
        indices = table.column("index").to_pylist()
        chunks.append({"file": f"data/{path.name}", "first_index": indices[0], "num_rows": len(indices)})
        totals.extend({"classes": classes} for classes in table.column("classes").to_pylist())
    path, num_images = Path(output_dir) / "manifest.json", sum(entry["num_rows"] for entry in chunks)
    return _write_run_json(path, class_names, totals, metadata, num_images=num_images, chunks=chunks)
