"""Convert the official COCO-Stuff 2017 release into a `datasets.DatasetDict` for MAFT fine-tuning.

Images: `images/<split>/*.jpg` (cocostuff repository layout), else `<split>/*.jpg` (COCO zips). Label maps (raw
value = COCO id - 1, 255 unlabelled): `annotations/<split>/*.png`, else `stuffthingmaps_trainval2017/<split>/*.png`,
else `stuffthingmaps/<split>/*.png`; `<split>` is `train2017` / `val2017`. Output: splits `train` and `validation`,
columns `image` (the original JPEG) and `label` (PNG, ids 0..170 of `vocab/coco_stuff_171.txt`, 255 = ignore); the
class names are stored in the label feature and in `id2label.json`.

    maft-prepare-coco-stuff --data_root /data/cocostuff --output_dir /data/coco_stuff_maft
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from maft_hf.cli.prepare_benchmark import id2label_json, save_dataset
from maft_hf.data.benchmarks import encode_label_png
from maft_hf.data.labels import coco_stuff_lut, features_with_class_names, label_map_array, map_labels
from maft_hf.inference.vocabulary import load_vocabulary

from .arguments import add_dataset_output_arguments, check_dataset_output

SPLITS = {"train2017": "train", "val2017": "validation"}
IMAGE_DIRS = ("images/{split}", "{split}")
LABEL_DIRS = ("annotations/{split}", "stuffthingmaps_trainval2017/{split}", "stuffthingmaps/{split}")
DESCRIPTION = (
    "COCO-Stuff 164k (2017 split) for MAFT: labels are contiguous ids 0..170 (raw stuffthingmaps value = COCO id - 1, "
    "11 unused ids and unlabelled -> 255)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data_root", required=True, help="Root of the extracted COCO-Stuff release.")
    add("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS), help="Default: both.")
    add("--max_images", type=int, default=None, help="Convert only the first N images of each split.")
    add("--num_proc", type=int, default=None, help="Worker processes for the conversion.")
    add("--cache_dir", default=None, help="datasets cache directory for the conversion.")
    add_dataset_output_arguments(parser, "--hub_model_id")
    args = parser.parse_args(argv)
    check_dataset_output(parser, args, "--hub_model_id")
    return args


def _find_dir(root: Path, candidates: tuple[str, ...], split: str, pattern: str) -> Path:
    for candidate in candidates:
        path = root / candidate.format(split=split)
        if path.is_dir() and any(path.glob(pattern)):
            return path
    tried = [str(root / c.format(split=split)) for c in candidates]
    raise FileNotFoundError(f"No {pattern} files for split {split!r}; looked in {tried}.")


def find_pairs(data_root: str | os.PathLike, split: str, max_images: int | None = None) -> list[tuple[str, str]]:
    """`(image_path, label_path)` pairs of one release split, sorted by file name; images without a label map are an
    error (the release has one PNG per JPEG)."""
    root = Path(data_root)
    image_dir = _find_dir(root, IMAGE_DIRS, split, "*.jpg")
    label_dir = _find_dir(root, LABEL_DIRS, split, "*.png")
    images = sorted(image_dir.glob("*.jpg"))
    if max_images is not None:
        images = images[:max_images]
    pairs, missing = [], []
    for image in images:
        label = label_dir / f"{image.stem}.png"
        (pairs if label.is_file() else missing).append((str(image), str(label)))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) in {image_dir} have no label map in {label_dir}, e.g. {missing[0][1]}."
        )
    return pairs


def convert_label(label_path: str, lut: np.ndarray) -> bytes:
    """Read a raw stuffthingmaps PNG, map it with `lut`, return the PNG bytes of the contiguous-id map."""
    raw = label_map_array({"path": label_path}, f"{label_path}: label maps")
    return encode_label_png(map_labels(raw, lut, f"{label_path}: label map"))


def _generate_shards(shards: list[list[tuple[str, str]]]):
    lut = coco_stuff_lut()
    for image_path, label_path in (pair for pairs in shards for pair in pairs):
        image = {"bytes": Path(image_path).read_bytes(), "path": None}
        yield {"image": image, "label": {"bytes": convert_label(label_path, lut), "path": None}}


def build_dataset_dict(args: argparse.Namespace):
    from datasets import Dataset, DatasetDict, Features, Image

    class_names = load_vocabulary("coco_stuff_171")
    features = features_with_class_names(Features({"image": Image(mode="RGB"), "label": Image(mode="L")}), class_names)
    splits = {}
    for split in args.splits:
        pairs = find_pairs(args.data_root, split, args.max_images)
        num_proc = args.num_proc if args.num_proc and args.num_proc > 1 and len(pairs) > 1 else None
        # contiguous chunks keep the file order when the shards are concatenated
        size = -(-len(pairs) // num_proc) if num_proc else len(pairs)
        shards = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        num_proc = min(num_proc, len(shards)) if num_proc else None
        options = {"features": features, "num_proc": num_proc, "cache_dir": args.cache_dir}
        dataset = Dataset.from_generator(_generate_shards, gen_kwargs={"shards": shards}, **options)
        dataset.info.description = DESCRIPTION
        splits[SPLITS[split]] = dataset
    return DatasetDict(splits), class_names


def main(argv: list[str] | None = None):
    """Run the conversion; returns the `DatasetDict`."""
    args = parse_args(argv)
    dataset_dict, class_names = build_dataset_dict(args)
    saved = ", ".join(f"{k}: {len(v)}" for k, v in dataset_dict.items())
    files = {"id2label.json": id2label_json(class_names)}
    return save_dataset(dataset_dict, files, saved, args, args.hub_model_id)
