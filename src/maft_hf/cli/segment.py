"""Segment images with any vocabulary: class-id maps, colour overlays and per-class areas, one set per image.

Inputs: `--images` (files, folders, `.txt`/`.lst` lists), `--dataset_path` (`save_to_disk`) or `--dataset_name`.
`--vocabulary`: a shipped name (`ade20k_150`), a file with one class per line (`building, edifice` is one class with a
synonym), or comma-separated names. Proposals: `--proposals mask2former:<ckpt>` / `oneformer:<ckpt>` (their class
scores join MAFT's by paper Eq. 9), `sam:<ckpt>`, `grid:<k>`; or `--masks` (with `--images`): one file per image, one
for all, or a folder of `<image stem>.npy|.png` (`(N, H, W)` masks or an `(H, W)` label map, 255 = none).
Outputs: per image `<stem>_map.png` (class ids, 16-bit above 255 classes), `<stem>_overlay.png`, `<stem>.json`
(per-class areas) and `summary.json`, or with `--output_format parquet` `data/chunk-<k>.parquet` and `manifest.json`.
Under `accelerate launch` every process takes a disjoint shard; `--resume` continues a killed run
(docs/performance.md).

    maft-segment --model org/maft-vitb16 --images photos/ --vocabulary ade20k_150 \\
        --proposals mask2former:facebook/mask2former-swin-base-coco-panoptic --output_dir out/
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from maft_hf import load_image
from maft_hf.hub.loading import load_model_and_processor, load_proposal_generator
from maft_hf.inference import outputs
from maft_hf.inference.pipeline import segment
from maft_hf.inference.text_classifier import build_text_classifier
from maft_hf.proposals import proposals_from_user_masks
from maft_hf.proposals.factory import parse_proposal_options

from .arguments import add_segmentation_arguments, check_positive, check_segmentation_args

RUN_FILE = ".maft_segment_run.json"  # the settings of a run, checked by --resume
# settings added after version 0.1.0's first run files, at the value those runs used
UNRECORDED_SETTINGS = {"preprocessing": "direct", "ensemble_formula": "paper"}
SEGMENT_OPTIONS = ("ensemble_weight", "batch_size", "preprocessing", "ensemble_formula")  # passed on to segment()
logger = logging.getLogger("maft_hf.segment")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", required=True, help="MAFT checkpoint: a local directory or a Hub id.")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", nargs="+", help="Image files, folders of images and .txt/.lst lists of paths.")
    inputs.add_argument("--dataset_path", help="A datasets folder written by save_to_disk.")
    inputs.add_argument("--dataset_name", help="A Hub dataset id (datasets.load_dataset).")
    add("--split", default=None, help="Dataset split (default: the only split; 'train' for --dataset_name).")
    add("--streaming", action="store_true", help="Stream --dataset_name instead of downloading it first.")
    add("--image_column", default="image", help="The dataset's image column.")
    add("--vocabulary", required=True, help="Shipped name, file (one class per line) or comma-separated names.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--masks", nargs="+", help="One mask file per image, one for all, or a folder.")
    add("--mask_ignore_index", type=int, default=255, help="Label-map id that is no mask (--masks).")
    add_segmentation_arguments(parser, proposals=source, preprocessing="direct")
    add("--output_dir", required=True, help="Folder for the maps, overlays and JSON files.")
    add("--output_format", choices=["png", "parquet"], default="png", help="Per-image PNG/json files or parquet.")
    add("--chunk_size", type=int, default=256, help="Images per parquet file (and per shard of a process).")
    add("--resume", action="store_true", help="Skip images (parquet chunks) already complete in --output_dir.")
    add("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
    add("--alpha", type=float, default=0.5, help="Opacity of the overlay colours.")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    check_segmentation_args(args)
    if args.masks and args.proposal_option:
        raise ValueError("--proposal_option applies to --proposals, not to --masks.")
    if args.masks and not args.images:
        raise ValueError("--masks pairs mask files with --images; it does not apply to datasets.")
    check_positive(args, "chunk_size")


def user_proposals(mask_file, picture, ignore_index: int):
    """Proposals of one image from its mask file, resized to the image (with a warning) when the sizes differ."""
    raw = outputs.read_mask_file(mask_file)
    size = (picture.height, picture.width)
    raw_size = (raw.height, raw.width) if hasattr(raw, "getbands") else tuple(int(s) for s in raw.shape[-2:])
    if raw_size != size:
        logger.warning("Masks %s are %s, the image is %s: resized bilinearly.", mask_file, raw_size, size)
    try:
        return proposals_from_user_masks(raw, image_size=size, ignore_index=ignore_index)
    except ValueError as err:
        raise ValueError(f"Mask file {str(mask_file)!r}: {err}") from err


@dataclass
class Item:
    """One input image: its index in the run, output stem, description, raw value (path or dataset cell), masks."""

    index: int
    stem: str
    source: str
    raw: object
    mask_file: Path | None = None

    def image(self):
        raw = self.raw
        if isinstance(raw, dict) and ("bytes" in raw or "path" in raw):  # a datasets Image cell, not decoded
            from datasets import Image

            raw = Image().decode_example(raw)
        return load_image(raw)


def load_input_dataset(args):
    """The dataset of `--dataset_path` / `--dataset_name`, reduced to `--image_column` (images left undecoded)."""
    import datasets

    if args.dataset_path:
        try:
            dataset = datasets.load_from_disk(args.dataset_path)
        except (FileNotFoundError, OSError, ValueError) as err:
            raise ValueError(f"Cannot load the dataset folder {args.dataset_path!r}: {err}") from err
        if isinstance(dataset, datasets.DatasetDict):
            split = args.split or (next(iter(dataset)) if len(dataset) == 1 else None)
            if split not in dataset:
                raise ValueError(f"Give --split, one of {sorted(dataset)} (got {args.split!r}).")
            dataset = dataset[split]
    else:
        split = args.split or "train"
        dataset = datasets.load_dataset(args.dataset_name, split=split, streaming=args.streaming)
    columns = dataset.column_names or list(dataset.features or [])
    if args.image_column not in columns:
        raise ValueError(f"The dataset has no column {args.image_column!r}; its columns are {columns}.")
    if isinstance((dataset.features or {}).get(args.image_column), datasets.Image):
        dataset = dataset.cast_column(args.image_column, datasets.Image(decode=False))  # decode only this shard's
    return dataset.select_columns([args.image_column])


class Inputs:
    """The images of a run by index; `items(keep)` yields those whose index `keep` accepts, reading nothing else.
    `total` is the number of images (for a streamed dataset known once `items` has gone through it)."""

    def __init__(self, args):
        self.column, self.dataset, self.masks = args.image_column, None, None
        if args.images:
            self.paths = outputs.find_images(args.images)
            self.stems = outputs.unique_stems(self.paths)
            self.masks = outputs.find_mask_files(args.masks, self.paths) if args.masks else None
            self.total = len(self.paths)
        else:
            self.dataset = load_input_dataset(args)
            self.name = args.dataset_path or f"{args.dataset_name}[{args.split or 'train'}]"
            self.total = None if args.streaming else len(self.dataset)

    def stem(self, index: int) -> str:
        return self.stems[index] if self.dataset is None else f"{index:08d}"

    def items(self, keep: Callable[[int], bool]) -> Iterator[Item]:
        if self.dataset is None:
            for i, path in enumerate(self.paths):
                if keep(i):
                    yield Item(i, self.stems[i], str(path), path, self.masks[i] if self.masks else None)
            return
        rows = enumerate(self.dataset) if self.total is None else ((i, None) for i in range(self.total))
        count = 0
        for i, row in rows:
            count = i + 1
            if keep(i):
                value = (row if row is not None else self.dataset[i])[self.column]
                yield Item(i, self.stem(i), f"{self.name}#{i}", value)
        self.total = count


class PngWriter:
    """Per-image `<stem>_map.png`, `_overlay.png`, `.json` (the json last: it marks the image done), `summary.json`."""

    unit = 1

    def __init__(self, args, names):
        self.args, self.names = args, names

    def done(self, item: Item) -> bool:
        return outputs.segmentation_done(self.args.output_dir, item.stem)

    def add(self, item: Item, picture, seg, metadata: dict) -> None:
        outputs.save_segmentation(
            self.args.output_dir, item.stem, picture, seg, self.names, alpha=self.args.alpha, metadata=metadata
        )

    def close(self) -> None:
        pass

    def finish(self, inputs: Inputs, settings: dict) -> dict:
        stems = [inputs.stem(i) for i in range(inputs.total)]
        missing = [stem for stem in stems if not outputs.segmentation_done(self.args.output_dir, stem)]
        if missing:
            raise ValueError(f"{len(missing)} images have no output (e.g. {missing[:3]}); run again with --resume.")
        records = [outputs.read_json(Path(self.args.output_dir) / f"{stem}.json") for stem in stems]
        return outputs.write_summary(self.args.output_dir, records, self.names, **settings)


class ParquetWriter:
    """Rows buffered per chunk of `--chunk_size` images; a chunk's file is written (atomically) once it is complete."""

    def __init__(self, args, names):
        self.args, self.names, self.unit = args, names, args.chunk_size
        self.chunk, self.rows = None, []

    def done(self, item: Item) -> bool:
        return outputs.parquet_chunk_path(self.args.output_dir, item.index // self.unit).is_file()

    def add(self, item: Item, picture, seg, metadata: dict) -> None:
        if self.chunk != item.index // self.unit:
            self.close()
            self.chunk = item.index // self.unit
        self.rows.append(outputs.parquet_row(item.index, item.stem, seg, self.names, metadata))

    def close(self) -> None:
        if self.rows:
            outputs.write_parquet_chunk(self.args.output_dir, self.chunk, self.rows)
        self.chunk, self.rows = None, []

    def finish(self, inputs: Inputs, settings: dict) -> dict:
        num_chunks = -(-inputs.total // self.unit)
        return outputs.write_parquet_manifest(self.args.output_dir, num_chunks, self.names, **settings)


def run_settings(args, names) -> dict:
    """What decides the outputs (not the batch size nor the number of processes): --resume requires the same."""
    inputs = args.images or {"dataset": args.dataset_path or args.dataset_name, "split": args.split}
    settings = {"model": args.model, "vocabulary": args.vocabulary, "proposals": args.proposals or "masks"}
    settings.update(proposal_options=args.proposal_option, ensemble_weight=args.ensemble_weight, inputs=inputs)
    for name in ("ensemble_formula", "preprocessing", "masks", "output_format"):
        settings[name] = getattr(args, name)
    settings["class_names"] = names
    if args.output_format == "parquet":
        return {**settings, "chunk_size": args.chunk_size}
    return {**settings, "alpha": args.alpha}


def prepare_output_dir(args, settings: dict, is_main: bool) -> None:
    """Check (every process) the settings of a resumed run; the main process then removes temporary files left by a
    kill (and, without --resume, stale parquet chunks) and records the settings."""
    directory = Path(args.output_dir)
    if args.resume and (directory / RUN_FILE).is_file():
        previous = {**UNRECORDED_SETTINGS, **outputs.read_json(directory / RUN_FILE)}
        changed = sorted(key for key in {**previous, **settings} if previous.get(key) != settings.get(key))
        if changed:
            raise ValueError(
                f"--resume: {args.output_dir!r} was written with other settings ({', '.join(changed)}); use the same "
                "settings or another --output_dir."
            )
    if not is_main:
        return
    directory.mkdir(parents=True, exist_ok=True)
    outputs.remove_temporary_files(directory)
    outputs.remove_temporary_files(directory / "data")
    if args.output_format == "parquet" and not args.resume:
        for stale in (directory / "data").glob("chunk-*.parquet"):
            stale.unlink()
    outputs.write_json(directory / RUN_FILE, settings)


def batches(iterable, size: int):
    iterator = iter(iterable)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def segment_shard(args, items, writer, segment_batch, progress) -> int:
    """Segment (`segment_batch(pictures, proposals=...)`) and write this process's pending items, `--batch_size` at a
    time; returns their number."""
    count = 0
    for batch in batches(items, args.batch_size):
        pictures = [item.image() for item in batch]
        proposals = None
        if args.masks:
            proposals = [
                user_proposals(item.mask_file, picture, args.mask_ignore_index)
                for item, picture in zip(batch, pictures)
            ]
        for item, picture, result in zip(batch, pictures, segment_batch(pictures, proposals=proposals)):
            metadata = {"image": item.source, "num_proposals": int(result["scores"].shape[0])}
            if item.mask_file is not None:
                metadata["masks"] = str(item.mask_file)
            writer.add(item, picture, result["segmentation"], metadata)
        count += len(batch)
        progress.update(len(batch))
    writer.close()
    return count


def main(argv: list[str] | None = None) -> dict | None:
    """Run the command line; returns the summary written to `summary.json` (png) or `manifest.json` (parquet) on the
    main process, None on the others."""
    from accelerate import PartialState

    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=args.log_level)
    check_args(args)
    state = PartialState(cpu=args.device == "cpu" or not torch.accelerator.is_available())  # else gloo is not used
    names = outputs.parse_vocabulary_argument(args.vocabulary)
    inputs = Inputs(args)
    settings = run_settings(args, names)
    writer = (ParquetWriter if args.output_format == "parquet" else PngWriter)(args, names)
    device = torch.device(args.device) if args.device else state.device
    process = f"process {state.process_index + 1} of {state.num_processes}"
    logger.info("%s images, %d classes, device %s, %s", inputs.total or "streamed", len(names), device, process)

    with state.main_process_first():  # the main process downloads, caches the text classifier, cleans the folder
        prepare_output_dir(args, settings, state.is_main_process)
        model, processor = load_model_and_processor(args.model, args.offline, device=device, allow_clip=False)
        generator = None
        if args.proposals:
            options = parse_proposal_options(args.proposal_option)
            generator = load_proposal_generator(args.proposals, options, args.offline, device)
        text_classifier = build_text_classifier(model, processor.tokenizer, names, cache=args.cache_dir)
    options = {key: getattr(args, key) for key in SEGMENT_OPTIONS}
    options.update(proposal_generator=generator, text_classifier=text_classifier)
    segment_batch = functools.partial(segment, class_names=names, model=model, processor=processor, **options)

    def mine(index: int) -> bool:
        return (index // writer.unit) % state.num_processes == state.process_index

    pending = (item for item in inputs.items(mine) if not (args.resume and writer.done(item)))
    started = time.perf_counter()
    with tqdm(desc="segment", unit="image", disable=not state.is_main_process) as progress:
        count = segment_shard(args, pending, writer, segment_batch, progress)
    seconds = time.perf_counter() - started  # read by scripts/benchmark_end_to_end.py
    logger.info(
        "Process %d segmented %d images in %.3f s into %s", state.process_index, count, seconds, args.output_dir
    )
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return writer.finish(inputs, {key: value for key, value in settings.items() if key != "class_names"})
