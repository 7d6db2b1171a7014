"""Convert an official benchmark release into a `datasets` dataset for MAFT evaluation (`maft-prepare-benchmark`;
docs/evaluation.md).

Output: a `DatasetDict` with one split, columns `image` (the original JPEG; A-847 resized as officially), `label`
(lossless PNG of the converted ids, 8-bit with ignore 255 or 16-bit with ignore 65535) and `file_name`. The class
names and the benchmark's metadata are stored in the label feature, and in `id2label.json` / `benchmark.json` beside
the data. ade20k_847 needs `--ade847_id_map` (a json / csv / tsv table, or the release's `index_ade20k.pkl`, read as
plain data only).

    maft-prepare-benchmark --benchmark ade20k_150 --data_root datasets --output_dir data/ade20k_150
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

from .arguments import add_dataset_output_arguments, check_dataset_output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    layouts = "\n\n".join(RELEASE_LAYOUTS.values())
    epilog = f"Expected layouts under --data_root:\n\n{layouts}"
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--benchmark", required=True, choices=sorted(BENCHMARKS), help="Benchmark to convert.")
    data_root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    add(
        "--data_root", default=data_root, help="Folder holding coco/, ade/, VOCdevkit/ (default: $DETECTRON2_DATASETS)."
    )
    add("--split", default="validation", choices=SPLITS, help="Release split (default: validation).")
    add("--max_images", type=int, default=None, help="Convert only the first N images (by name).")
    add("--ade847_id_map", default=None, help="ade20k_847: object id -> class name table file.")
    add("--split_file", default=None, help="PASCAL-Context / VOC: image-id list replacing ImageSets.")
    add("--label_dir", default=None, help="pascal_voc_20: label folder (default SegmentationClass).")
    add("--cache_dir", default=None, help="datasets cache for the conversion (default: a temp dir).")
    add_dataset_output_arguments(parser, "--hub_dataset_id")
    args = parser.parse_args(argv)
    check_dataset_output(parser, args, "--hub_dataset_id")
    if not os.path.isdir(args.data_root):
        parser.error(f"--data_root {args.data_root!r} is not a folder (it holds coco/, ade/, VOCdevkit/).")
    if args.benchmark == "ade20k_847" and args.ade847_id_map is None:
        parser.error("ade20k_847 needs --ade847_id_map (a json / csv / tsv id table or index_ade20k.pkl).")
    if args.ade847_id_map is not None and not os.path.isfile(args.ade847_id_map):
        parser.error(f"--ade847_id_map {args.ade847_id_map!r} is not a file.")
    return args


def _convert_and_write(args: argparse.Namespace, cache_dir: str):
    from datasets import DatasetDict

    options = {key: getattr(args, key) for key in ("split", "max_images", "ade847_id_map", "split_file", "label_dir")}
    dataset = build_benchmark_dataset(args.benchmark, args.data_root, cache_dir=cache_dir, **options)
    dataset_dict = DatasetDict({args.split: dataset})
    files = {
        "id2label.json": id2label_json(BENCHMARKS[args.benchmark].class_names()),
        "benchmark.json": json.dumps(benchmark_metadata(args.benchmark), indent=2),
    }
    saved = f"{len(dataset)} {args.benchmark} images ({args.split})"
    return save_dataset(dataset_dict, files, saved, args, args.hub_dataset_id)


def id2label_json(class_names) -> str:
    return json.dumps({str(i): name for i, name in enumerate(class_names)}, indent=2)


def save_dataset(dataset_dict, files: dict[str, str], saved: str, args, repo_id: str | None):
    """`save_to_disk` to `--output_dir` with the JSON `files` beside it, and/or (`--push_to_hub`) push both to the
    Hub dataset `repo_id`."""
    if args.output_dir is not None:
        dataset_dict.save_to_disk(args.output_dir)
        for file_name, text in files.items():
            write_atomic(Path(args.output_dir, file_name), text)
        print(f"Saved {saved} to {args.output_dir}")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        dataset_dict.push_to_hub(repo_id, private=args.private, token=args.hub_token)
        api = HfApi(token=args.hub_token)
        for name, text in files.items():
            api.upload_file(path_or_fileobj=text.encode(), path_in_repo=name, repo_id=repo_id, repo_type="dataset")
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
