"""Convert an official benchmark release into a `datasets` dataset for MAFT evaluation (`maft-prepare-benchmark`).

Output: a `DatasetDict` with one split (`validation` by default), columns `image` (the original JPEG; A-847 resized
to a short side of 512 as the official script does), `label` (lossless PNG of the converted ids, 8-bit with ignore
255 or 16-bit with ignore 65535 for ade20k_847 / pascal_context_459) and `file_name`. The class names and the
benchmark's metadata are stored in the label feature (they survive `push_to_hub` and parquet); `id2label.json` and
`benchmark.json` are written beside the data too. COCO-Stuff and VOC images whose converted map is all ignore are
dropped, as officially; `coco_stuff_zero_shot --split train` also ignores the 15 unseen classes.

ade20k_847 needs `--ade847_id_map`, the object id -> class table: a json / csv / tsv file, or the release's
`index_ade20k.pkl`, which is read as plain data only (nothing in it is executed). PASCAL-Context needs scipy.

Examples:

    maft-prepare-benchmark --benchmark ade20k_150 --data_root datasets --output_dir data/ade20k_150
    maft-prepare-benchmark --benchmark ade20k_847 --data_root datasets \\
        --ade847_id_map ade20k_847_categories.json --output_dir data/ade20k_847
    maft-prepare-benchmark --benchmark pascal_voc_20 --data_root datasets --max_images 16 \\
        --push_to_hub --hub_dataset_id user/pascal-voc-20-maft
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from maft_hf.data.benchmarks import BENCHMARKS, RELEASE_LAYOUTS, SPLITS, benchmark_metadata, build_benchmark_dataset
from maft_hf.evaluation.progress import write_atomic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    layouts = "\n\n".join(RELEASE_LAYOUTS.values())
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=f"Expected layouts under --data_root:\n\n{layouts}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS), help="Benchmark to convert.")
    parser.add_argument(
        "--data_root",
        default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
        help="Folder holding coco/, ade/, VOCdevkit/ (default: $DETECTRON2_DATASETS or ./datasets).",
    )
    parser.add_argument("--split", default="validation", choices=SPLITS, help="Release split (default: validation).")
    parser.add_argument("--output_dir", default=None, help="Where to save_to_disk the DatasetDict.")
    parser.add_argument("--max_images", type=int, default=None, help="Convert only the first N images (by name).")
    parser.add_argument("--ade847_id_map", default=None, help="ade20k_847: object id -> class name table file.")
    parser.add_argument("--split_file", default=None, help="PASCAL-Context / VOC: image-id list replacing ImageSets.")
    parser.add_argument("--label_dir", default=None, help="pascal_voc_20: label folder (default SegmentationClass).")
    parser.add_argument("--cache_dir", default=None, help="datasets cache for the conversion (default: a temp dir).")
    parser.add_argument("--push_to_hub", action="store_true", help="Push the DatasetDict to the Hugging Face Hub.")
    parser.add_argument("--hub_dataset_id", default=None, help="Hub dataset repo id, e.g. `user/ade20k-847-maft`.")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: the cached login).")
    parser.add_argument("--private", action="store_true", help="Create the Hub dataset repo as private.")
    args = parser.parse_args(argv)
    if args.output_dir is None and not args.push_to_hub:
        parser.error("give --output_dir and/or --push_to_hub.")
    if args.push_to_hub and not args.hub_dataset_id:
        parser.error("--push_to_hub needs --hub_dataset_id.")
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max_images must be >= 1, got {args.max_images}.")
    if not os.path.isdir(args.data_root):
        parser.error(f"--data_root {args.data_root!r} is not a folder (it holds coco/, ade/, VOCdevkit/).")
    if args.benchmark == "ade20k_847" and args.ade847_id_map is None:
        parser.error("ade20k_847 needs --ade847_id_map (a json / csv / tsv id table or index_ade20k.pkl).")
    if args.ade847_id_map is not None and not os.path.isfile(args.ade847_id_map):
        parser.error(f"--ade847_id_map {args.ade847_id_map!r} is not a file.")
    return args


def _convert_and_write(args: argparse.Namespace, cache_dir: str):
    from datasets import DatasetDict

    dataset = build_benchmark_dataset(
        args.benchmark,
        args.data_root,
        split=args.split,
        max_images=args.max_images,
        ade847_id_map=args.ade847_id_map,
        split_file=args.split_file,
        label_dir=args.label_dir,
        cache_dir=cache_dir,
    )
    dataset_dict = DatasetDict({args.split: dataset})
    files = {
        "id2label.json": id2label_json(BENCHMARKS[args.benchmark].class_names()),
        "benchmark.json": json.dumps(benchmark_metadata(args.benchmark), indent=2),
    }
    saved = f"{len(dataset)} {args.benchmark} images ({args.split})"
    return save_dataset(
        dataset_dict, files, saved, args.output_dir, args.hub_dataset_id if args.push_to_hub else None, args
    )


def id2label_json(class_names) -> str:
    return json.dumps({str(i): name for i, name in enumerate(class_names)}, indent=2)


def save_dataset(dataset_dict, files: dict[str, str], saved: str, output_dir, repo_id, args):
    """`save_to_disk` with the JSON `files` beside it, and/or push both to the Hub dataset `repo_id`."""
    if output_dir is not None:
        dataset_dict.save_to_disk(output_dir)
        for file_name, text in files.items():
            write_atomic(Path(output_dir, file_name), text)
        print(f"Saved {saved} to {output_dir}")
    if repo_id is not None:
        from huggingface_hub import HfApi

        dataset_dict.push_to_hub(repo_id, private=args.private, token=args.hub_token)
        api = HfApi(token=args.hub_token)
        for file_name, text in files.items():
            data = text.encode("utf-8")
            api.upload_file(path_or_fileobj=data, path_in_repo=file_name, repo_id=repo_id, repo_type="dataset")
        print(f"Pushed to https://huggingface.co/datasets/{repo_id}")
    return dataset_dict


def main(argv: list[str] | None = None):
    """Run the conversion; returns the `DatasetDict` (backed by `--output_dir` when given)."""
    args = parse_args(argv)
    if args.cache_dir is not None:
        return _convert_and_write(args, args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="maft_benchmark_") as cache_dir:
        dataset_dict = _convert_and_write(args, cache_dir)
        if args.output_dir is not None:
            from datasets import load_from_disk

            return load_from_disk(args.output_dir)  # the conversion cache is deleted on return
        return dataset_dict
