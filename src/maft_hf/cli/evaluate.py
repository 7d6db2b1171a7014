"""Evaluate a MAFT checkpoint on a semantic-segmentation benchmark and report the numbers of paper Tables 1 and 3
(`maft-evaluate`; the guide is docs/evaluation.md).

Data: `--benchmark NAME` (vocabulary, ignore index, unseen classes and the paper's numbers come with it; the data in
`data/<NAME>` by default, as `maft-prepare-benchmark` writes it), or any dataset with `--vocabulary` (default: the
class names stored in the dataset or its id2label.json), `--unseen_classes`, `--ignore_index`. `--preprocessing`
defaults to `released` for a benchmark, else `direct`. Outputs in `--output_dir`: `results.json`,
`confusion_matrix.npy` (rows = ground truth) and `results.md`; `--resume` continues a killed run from
`<output_dir>/progress/`. Several processes: `accelerate launch --multi_gpu --num_processes 8 -m maft_hf.cli evaluate`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .arguments import add_segmentation_arguments, check_positive, check_segmentation_args

# Heavy imports happen inside the functions, after `main` has set the offline variables that the Hub libraries read
# when they are imported.

logger = logging.getLogger("maft_hf.evaluate")
DEFAULT_DATA_DIR = "data"
LOOP_OPTIONS = ("ensemble_weight", "batch_size", "image_column", "label_column", "max_samples", "save_every", "resume")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from maft_hf.data.benchmarks import BENCHMARKS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", help="MAFT checkpoint: a local directory or a Hub id.")
    add("--benchmark", choices=sorted(BENCHMARKS), help="A registered benchmark (see BENCHMARKS).")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--dataset_path", help="A dataset saved with save_to_disk (e.g. by prepare_benchmark.py).")
    data.add_argument("--dataset_name", help="A Hub dataset id (or a local folder load_dataset reads).")
    add("--dataset_config", help="Configuration name of --dataset_name.")
    add("--split", help="Split to evaluate (default: validation, or the only split).")
    add("--streaming", action="store_true", help="Stream --dataset_name instead of downloading it.")
    add("--dataset_cache_dir", help="datasets cache for --dataset_name downloads.")
    add("--vocabulary", help="Shipped name, file or comma-separated names, in label-id order (default: stored ones).")
    add("--unseen_classes", help="Unseen classes (names, ids or a vocabulary) for seen / unseen mIoU and hIoU.")
    add("--ignore_index", type=int, help="Unlabelled label value (default 255).")
    add("--image_column", default="image", help="Image column (default: image).")
    add("--label_column", default="label", help="Label-map column (default: label).")
    add_segmentation_arguments(parser)
    add("--max_samples", type=int, help="Evaluate only the first N images.")
    add("--cpu", action="store_true", help="Run on CPU even when a GPU is present.")
    add("--output_dir", required=True, help="Where results.json, results.md and the matrix go.")
    add("--update_model_card", help="A model card (README.md) to add the scores to.")
    add("--combine_results", nargs="+", metavar="RESULTS_JSON", help="Only write one results.md for these files.")
    add("--save_every", type=int, default=50, help="Save each process's partial results every N images (default 50).")
    add("--resume", action="store_true", help="Continue from the progress saved in --output_dir.")
    add("--no_progress", action="store_true", help="No progress bar.")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Errors that need no data or model."""
    if args.combine_results:
        return
    if not args.model:
        raise ValueError("--model is required (a MAFT checkpoint directory or Hub id).")
    if not args.proposals:
        raise ValueError("--proposals is required, e.g. 'mask2former:<checkpoint>' or 'grid:4'.")
    if args.benchmark is None and args.dataset_path is None and args.dataset_name is None:
        raise ValueError(
            "Give --benchmark, or --dataset_path / --dataset_name (plus --vocabulary for a dataset "
            "that stores no class names)."
        )
    check_positive(args, "save_every", "max_samples")
    check_segmentation_args(args)
    if args.update_model_card is not None:
        card = Path(args.update_model_card)
        if not (card.is_file() or (card / "README.md").is_file()):
            raise ValueError(f"--update_model_card {str(card)!r}: no such model card (a README.md or its folder).")


def load_eval_dataset(args: argparse.Namespace, accelerator) -> tuple:
    """`(dataset, description, split)` of the run."""
    import datasets

    if args.dataset_name is not None:
        split = args.split or "validation"
        with accelerator.main_process_first():  # one download, the other processes read the cache
            try:
                options = {"split": split, "streaming": args.streaming, "cache_dir": args.dataset_cache_dir}
                dataset = datasets.load_dataset(args.dataset_name, args.dataset_config, **options)
            except (FileNotFoundError, ValueError, ConnectionError) as err:
                raise ValueError(f"Cannot load the dataset {args.dataset_name!r} (split {split!r}): {err}") from err
        return dataset, args.dataset_name, split
    path = args.dataset_path
    if path is None:  # --benchmark alone: the folder prepare_benchmark.py's examples write
        path = os.path.join(DEFAULT_DATA_DIR, args.benchmark)
        if not os.path.isdir(path):
            raise ValueError(
                f"No dataset for {args.benchmark} at {path}: prepare it with `python scripts/prepare_benchmark.py "
                f"--benchmark {args.benchmark} --data_root <releases> --output_dir {path}`, or pass --dataset_path / "
                "--dataset_name."
            )
    if not os.path.isdir(path):
        raise ValueError(f"--dataset_path {path!r} is not a directory saved with save_to_disk.")
    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as err:
        raise ValueError(f"{path!r} is not a dataset saved with save_to_disk: {err}") from err
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded, path, args.split
    splits, split = list(loaded), args.split
    if split is None:
        if "validation" not in splits and len(splits) != 1:
            raise ValueError(f"{path} has the splits {splits}: choose one with --split.")
        split = "validation" if "validation" in splits else splits[0]
    if split not in splits:
        raise ValueError(f"{path} has no split {split!r}; its splits are {splits}.")
    return loaded[split], path, split


def _hub_id2label_folder(args: argparse.Namespace) -> str | None:
    """The folder holding the `id2label.json` of `--dataset_name` (local, or downloaded from the Hub)."""
    if args.dataset_name is None:
        return args.dataset_path
    if os.path.isdir(args.dataset_name):
        return args.dataset_name
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(args.dataset_name, "id2label.json", repo_type="dataset", local_files_only=args.offline)
        return os.path.dirname(path)
    except Exception as err:  # an optional file: without it the error below asks for --vocabulary
        logger.debug("No id2label.json for %s: %s", args.dataset_name, err)
        return None


def resolve_settings(args: argparse.Namespace, dataset) -> dict:
    """Benchmark, vocabulary, ignore index and unseen classes of the run, each checked against the others."""
    from maft_hf.data.benchmarks import BENCHMARKS
    from maft_hf.data.labels import dataset_metadata, get_class_names
    from maft_hf.inference.vocabulary import parse_vocabulary_argument, unseen_class_ids

    stored = (dataset_metadata(dataset).get("benchmark") or {}).get("benchmark")
    benchmark = args.benchmark or (stored if stored in BENCHMARKS else None)
    spec = BENCHMARKS[benchmark] if benchmark else None
    if args.vocabulary is not None:
        names = parse_vocabulary_argument(args.vocabulary)
    elif spec is not None:
        names = spec.class_names()
    else:
        names = get_class_names(dataset) or get_class_names(dataset, _hub_id2label_folder(args))
        if names is None:
            raise ValueError(
                "The dataset stores no class names (in its features, description or an id2label.json beside it): "
                "pass --vocabulary (label id i = line / name i)."
            )
    if spec is not None and len(names) != spec.num_classes:
        raise ValueError(
            f"--vocabulary has {len(names)} classes but the {benchmark} benchmark has {spec.num_classes} "
            f"(its vocabulary is {spec.vocabulary!r})."
        )
    ignore_index = args.ignore_index if args.ignore_index is not None else (spec.ignore_index if spec else 255)
    if spec is not None and ignore_index != spec.ignore_index:
        raise ValueError(
            f"--ignore_index {ignore_index} differs from the {benchmark} benchmark's ignore index {spec.ignore_index}."
        )
    unseen = (spec.unseen_classes() or None) if spec is not None else None
    if args.unseen_classes is not None:
        unseen = unseen_class_ids(args.unseen_classes, names)
    return {"benchmark": benchmark, "class_names": names, "ignore_index": ignore_index, "unseen_classes": unseen}


def write_markdown(output_dir: str | os.PathLike, records) -> Path:
    from maft_hf.evaluation.progress import check_writable, write_atomic
    from maft_hf.evaluation.report import format_results_markdown

    path = check_writable(output_dir) / "results.md"
    write_atomic(path, format_results_markdown(records))
    return path


def combine_results(paths: list[str], output_dir: str) -> list[dict]:
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"Cannot read the results file {path!r}: {err}") from err
    logger.info("Wrote %s", write_markdown(output_dir, records))
    return records


def write_outputs(args: argparse.Namespace, results: dict, record: dict) -> None:
    import io

    import numpy as np

    from maft_hf.evaluation.progress import write_atomic

    output_dir = Path(args.output_dir)
    buffer = io.BytesIO()
    np.save(buffer, results["confusion_matrix"].matrix.numpy())
    write_atomic(output_dir / "confusion_matrix.npy", buffer.getvalue())
    write_atomic(output_dir / "results.json", json.dumps(record, indent=2) + "\n")
    write_markdown(output_dir, [record])
    if args.update_model_card is not None:
        update_card(args.update_model_card, record, args.proposals)
    logger.info("Wrote results.json, results.md and confusion_matrix.npy to %s", output_dir)


def update_card(card_path: str, record: dict, proposals: str) -> None:
    from maft_hf.evaluation.report import model_card_results
    from maft_hf.hub.model_card import update_model_card_results

    scores = model_card_results(record)
    if not scores:
        logger.warning("No finite score to add to the model card %s.", card_path)
        return
    try:
        update_model_card_results(card_path, scores, evaluation_proposals=proposals)
    except ValueError as err:
        raise ValueError(f"results.json is written, but the model card {card_path!r} was not updated: {err}") from err


def main(argv: list[str] | None = None) -> dict | list[dict]:
    """Run the command line; returns the `results.json` record (the list of records with `--combine_results`)."""
    if "--offline" in (sys.argv[1:] if argv is None else argv):  # before parse_args imports maft_hf / transformers
        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    args = parse_args(argv)
    check_args(args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=args.log_level)
    if args.combine_results:
        return combine_results(args.combine_results, args.output_dir)

    from accelerate import Accelerator

    from maft_hf.evaluation.loop import evaluate_segmentation
    from maft_hf.evaluation.progress import check_writable
    from maft_hf.evaluation.report import build_results_record
    from maft_hf.hub.loading import load_model_and_processor, load_proposal_generator
    from maft_hf.proposals.factory import parse_proposal_options

    check_writable(args.output_dir)  # before any data or model is loaded
    accelerator = Accelerator(cpu=args.cpu)
    if not accelerator.is_main_process:
        logging.getLogger().setLevel("ERROR")
    dataset, dataset_description, split = load_eval_dataset(args, accelerator)
    settings = resolve_settings(args, dataset)
    model, processor = load_model_and_processor(args.model, args.offline, allow_clip=False)
    options = parse_proposal_options(args.proposal_option)
    preprocessing = args.preprocessing or ("released" if settings["benchmark"] else "direct")
    segment_kwargs = {"preprocessing": preprocessing, "ensemble_formula": args.ensemble_formula}
    generator = load_proposal_generator(args.proposals, options, args.offline, accelerator.device)
    names, ignore_index = settings["class_names"], settings["ignore_index"]
    processes = f"{accelerator.num_processes} process(es) on {accelerator.device}"
    logger.info("%s: %s classes, ignore %s, %s", dataset_description, len(names), ignore_index, processes)
    run_key = {"model": args.model, "dataset": dataset_description, "split": split, "proposals": args.proposals}
    run_key["proposal_options"] = sorted(args.proposal_option)
    results = evaluate_segmentation(
        model,
        processor,
        dataset,
        names,
        generator,
        accelerator=accelerator,
        unseen_classes=settings["unseen_classes"],
        ignore_index=ignore_index,
        cache=args.cache_dir,
        progress=not args.no_progress,
        progress_dir=os.path.join(args.output_dir, "progress"),
        segment_kwargs=segment_kwargs,
        run_key=run_key,
        **{key: getattr(args, key) for key in LOOP_OPTIONS},
    )
    record = build_results_record(
        results,
        model=args.model,
        dataset=dataset_description,
        split=split,
        proposals=args.proposals,
        ensemble_weight=args.ensemble_weight,
        class_names=names,
        benchmark=settings["benchmark"],
        ignore_index=ignore_index,
        extra={"batch_size": args.batch_size, "max_samples": args.max_samples, **segment_kwargs},
    )
    if accelerator.is_main_process:
        write_outputs(args, results, record)
        summary = {k: record["metrics"].get(k) for k in ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "pAcc")}
        logger.info("%s", {k: v for k, v in summary.items() if v is not None or k == "mIoU"})
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group: without it gloo may abort at exit
    return record
