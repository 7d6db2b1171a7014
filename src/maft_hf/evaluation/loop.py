"""The evaluation loop [`evaluate_segmentation`]: an exact confusion matrix of a dataset, the same for any batch size
and number of processes (disjoint shards, summed int matrices), resumable from each process's saved progress."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.labels import dataset_metadata, label_map_array
from ..inference.pipeline import (
    _generate,
    _released_ensemble_check,
    processor_text_classifier,
    resolve_proposal_generator,
    segment,
)
from ..inference.semantic_map import DEFAULT_ENSEMBLE_WEIGHT, match_generator_scores
from ..inference.vocabulary import load_vocabulary, unseen_class_ids
from ..model.images import load_image, load_images
from ..proposals import Proposals
from .metrics import ConfusionMatrix, compute_segmentation_metrics
from .progress import ProgressFile

logger = logging.getLogger(__name__)

FILE_NAME_COLUMN = "file_name"


def _is_iterable_dataset(dataset) -> bool:
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def dataset_columns(dataset) -> list[str]:
    """Column names of a `Dataset` or `IterableDataset` (from the first example when the features are unknown)."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        first = next(iter(dataset), None)
        names = list(first) if isinstance(first, dict) else []
    return list(names)


def _describe(position: int, row: dict) -> str:
    return f"sample {position}" + (f" ({row[FILE_NAME_COLUMN]})" if row.get(FILE_NAME_COLUMN) else "")


def check_dataset(
    dataset, class_names: Sequence[str], ignore_index: int | None, image_column: str, label_column: str, samples: int
) -> Any:
    """Fail early on missing columns, a vocabulary disagreeing with the dataset's stored class names or benchmark, and
    (in the first `samples` rows) label ids outside `[0, C)` other than the ignore index, or label maps of another
    size than their image. Returns the dataset with only the columns the evaluation reads."""
    columns = dataset_columns(dataset)
    for what, column in (("label", label_column), ("image", image_column)):
        if column not in columns:
            raise ValueError(
                f"The dataset has no {what} column {column!r}; its columns are {columns}. Pass the right name "
                f"(`{what}_column=` / `--{what}_column`)."
            )
    stored = dataset_metadata(dataset)
    names, benchmark = stored.get("class_names"), stored.get("benchmark") or {}
    if names is not None and len(names) != len(class_names):
        raise ValueError(
            f"The vocabulary has {len(class_names)} classes but the dataset's labels index {len(names)} stored "
            f"class names ({names[:5]}...); label id i is class i of the dataset's own vocabulary."
        )
    name, count, ignore = benchmark.get("benchmark"), benchmark.get("num_classes"), benchmark.get("ignore_index")
    if count not in (None, len(class_names)):
        raise ValueError(f"The dataset's {name} benchmark has {count} classes; the vocabulary has {len(class_names)}.")
    if ignore not in (None, ignore_index):
        raise ValueError(f"The dataset's {name} benchmark has the ignore index {ignore}, not {ignore_index}.")
    bad: set[int] = set()
    for position, row in enumerate(itertools.islice(iter(dataset), samples)):
        try:
            label = label_map_array(row[label_column])
        except ValueError as err:
            raise ValueError(f"{_describe(position, row)}: {err}") from err
        image = load_image(row[image_column])
        if label.shape != (image.height, image.width):
            raise ValueError(
                f"{_describe(position, row)}: the label map is (H, W) = {tuple(label.shape)} but its image is "
                f"{(image.height, image.width)}; predictions have the image's size, so must its label map."
            )
        bad.update(int(v) for v in np.unique(label) if v != ignore_index and not 0 <= v < len(class_names))
    if bad:
        raise ValueError(
            f"The labels hold class ids {sorted(bad)[:20]}{' ...' if len(bad) > 20 else ''} (first {samples} samples "
            f"scanned), but the vocabulary has {len(class_names)} classes and the ignore index is {ignore_index}: "
            "pass the dataset's own vocabulary (in label-id order) and ignore index."
        )
    return dataset.select_columns([c for c in (image_column, label_column, FILE_NAME_COLUMN) if c in columns])


def shard_rows(dataset, accelerator=None, skip: int = 0) -> tuple[Iterator[tuple[int, dict]], int | None]:
    """This process's `(position, row)` pairs after its first `skip` and their number (None when iterable): a contiguous
    part of a map-style dataset (position: its index), a node split of an iterable one (position: a running count)."""
    world = 1 if accelerator is None else accelerator.num_processes
    if _is_iterable_dataset(dataset):
        if world > 1:
            from datasets.distributed import split_dataset_by_node

            dataset = split_dataset_by_node(dataset, accelerator.process_index, world)
        return itertools.islice(enumerate(dataset), skip, None), None
    indices = list(range(len(dataset)))
    if world > 1:
        with accelerator.split_between_processes(indices) as shard:
            indices = list(shard)
    return zip(indices[skip:], dataset.select(indices[skip:])), len(indices)


def unseen_classes_known_to_generator(proposals, class_names: Sequence[str], unseen: Sequence[int]) -> list[str]:
    """Unseen classes the generator has class scores for (matched by name as in Eq. 9): non-empty = not zero-shot."""
    if proposals.class_scores is None or not unseen:
        return []
    _, seen = match_generator_scores(proposals.class_scores[:1], proposals.class_names, class_names)
    return [class_names[i] for i in unseen if bool(seen[i])]


def _track_unseen_known(known: dict, proposals, class_names: Sequence[str], unseen: Sequence[int]) -> None:
    for item in proposals:
        key = json.dumps(list(item.class_names or ()))
        if item.class_names and key not in known:
            known[key] = unseen_classes_known_to_generator(item, class_names, unseen)
            if known[key]:
                logger.warning(
                    "The proposal generator has class scores for the unseen classes %s: with the Eq. 9 ensemble this "
                    "is not zero-shot. Use ensemble_weight=0 or a generator trained on the seen classes only.",
                    known[key],
                )


def evaluate_segmentation(
    model,
    processor,
    dataset,
    class_names: str | Sequence[str],
    proposal_generator,
    accelerator=None,
    ensemble_weight: float | None = DEFAULT_ENSEMBLE_WEIGHT,
    batch_size: int = 4,
    unseen_classes: Iterable[int | str] | None = None,
    ignore_index: int | None = 255,
    image_column: str = "image",
    label_column: str = "label",
    *,
    max_samples: int | None = None,
    text_classifier: torch.Tensor | None = None,
    templates: Sequence[str] | None = None,
    cache=None,
    num_check_samples: int = 4,
    progress: bool = True,
    segment_kwargs: Mapping[str, Any] | None = None,
    progress_dir: str | os.PathLike | None = None,
    save_every: int = 50,
    resume: bool = False,
    run_key: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores of a `MaskAwareCLIPModel` (with its `MAFTProcessor`) on a `Dataset` or `IterableDataset` whose labels
    are `(H, W)` class ids at the image's size (`ignore_index`: unlabelled, 65535 in 16-bit maps; None: none), on one
    process or on each `accelerator` process a disjoint shard. The generator proposes one image at a time;
    `ensemble_weight` is Eq. 9's lambda (0 / None: MAFT alone, as released); `unseen_classes` (ids or names) adds seen /
    unseen mIoU and hIoU. With `progress_dir` each process saves its matrix every `save_every` images, and `resume`
    continues the same run (`run_key` and these settings). Returns `compute_segmentation_metrics` (percent) plus
    `num_images`, `num_processes`, `images_per_process`, `ensemble_applied`, `unseen_classes_known_to_generator`
    (non-empty: not zero-shot) and `confusion_matrix` (summed, on CPU, on every process)."""
    names = load_vocabulary(class_names)
    segment_kwargs = dict(segment_kwargs or {})
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if ensemble_weight is not None and not 0.0 <= float(ensemble_weight) <= 1.0:
        raise ValueError(f"ensemble_weight must lie in [0, 1] (0 or None = off), got {ensemble_weight}.")
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    confusion = ConfusionMatrix(len(names), ignore_index, device=device)  # refuses an ignore index inside [0, C)
    unseen = None if unseen_classes is None else unseen_class_ids(unseen_classes, names)
    if unseen is not None and not unseen:
        raise ValueError("unseen_classes is empty; pass None for a benchmark without unseen classes.")
    iterable = _is_iterable_dataset(dataset)
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}.")
        dataset = dataset.take(max_samples) if iterable else dataset.select(range(min(max_samples, len(dataset))))
    if not iterable and len(dataset) == 0:
        raise ValueError("The dataset is empty: nothing to evaluate.")
    fingerprint = getattr(dataset, "_fingerprint", None)  # of the rows, before the columns are narrowed
    dataset = check_dataset(dataset, names, ignore_index, image_column, label_column, num_check_samples)
    generator = resolve_proposal_generator(proposal_generator)
    _released_ensemble_check(generator, segment_kwargs.get("ensemble_formula", "paper"))
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    progress_file = None
    if progress_dir is not None:
        key = {
            "class_names_sha256": hashlib.sha256(json.dumps(names).encode()).hexdigest(),
            "ignore_index": ignore_index,
            "ensemble_weight": ensemble_weight,
            "unseen_classes": unseen,
            "max_samples": max_samples,
            "num_examples": None if iterable else len(dataset),
            "dataset_fingerprint": fingerprint,
            "segment_kwargs": repr(sorted(segment_kwargs.items())),
            "num_processes": world,
        }
        progress_file = ProgressFile(progress_dir, rank, world, {**key, **dict(run_key or {})}, save_every)

    model.to(device).eval()
    if text_classifier is None:  # with a disk cache the main process writes it first and the others read it
        with accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext():
            text_classifier = processor_text_classifier(model, processor, names, templates, cache)
    count, with_scores, known = 0, 0, {}  # known: generator vocabulary (JSON) -> the unseen classes it has scores for
    saved = progress_file.load() if progress_file is not None and resume else None
    if saved is not None:
        confusion.matrix += torch.from_numpy(saved["matrix"]).to(device)
        count, with_scores, known = saved["count"], saved["extra"]["with_scores"], saved["extra"]["known"]
        logger.info("Resuming process %d after %d image(s) from %s", rank, count, progress_file.path)
    rows, total = shard_rows(dataset, accelerator, skip=count)
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    desc = "evaluate" if world == 1 else "evaluate (process 0 shard)"
    bar = tqdm(total=total, initial=count, desc=desc, unit="image", disable=not show)
    on_canvas = segment_kwargs.get("preprocessing") == "released" and hasattr(generator, "propose_on_canvas")
    canvas_generator = generator if on_canvas else None
    canvas_scores = Proposals(torch.zeros(1, 1, 1), torch.zeros(1, len(names)), list(names))
    options = {"ensemble_weight": ensemble_weight, "text_classifier": text_classifier, "batch_size": batch_size}
    while batch := list(itertools.islice(rows, batch_size)):
        images = load_images([row[image_column] for _, row in batch])
        if on_canvas:  # segment() has the generator propose on the padded canvas (as the release does), scoring `names`
            proposals, scored = None, [canvas_scores] * len(images)
        else:
            proposals = _generate(generator, images, names, text_classifier)  # one image per call, as segment()
            scored = [item for item in proposals if item.class_scores is not None]
        with_scores += len(scored)
        if unseen and ensemble_weight:
            _track_unseen_known(known, scored, names, unseen)
        outputs = segment(
            images, names, model, processor, canvas_generator, proposals=proposals, **options, **segment_kwargs
        )
        for (position, row), output in zip(batch, outputs):
            try:
                confusion.update(output["segmentation"], label_map_array(row[label_column]))
            except ValueError as err:
                where = f" of process {rank}" if world > 1 and total is None else ""  # positions count per process
                raise ValueError(f"{_describe(position, row)}{where}: {err}") from err
        count += len(batch)
        bar.update(len(batch))
        if progress_file is not None:
            progress_file.save(confusion.matrix, count, {"with_scores": with_scores, "known": known})
    bar.close()
    if progress_file is not None:
        progress_file.save(confusion.matrix, count, {"with_scores": with_scores, "known": known}, force=True)
    return _results(confusion, count, with_scores, known, names, unseen, bool(ensemble_weight), accelerator)


def _results(confusion, count, with_scores, known, names, unseen, ensemble_on, accelerator) -> dict[str, Any]:
    """The metrics of the matrices summed over processes, with the run's counts."""
    if accelerator is None:
        confusion, counts = ConfusionMatrix.from_matrix(confusion.matrix.cpu(), confusion.ignore_index), [count]
    else:
        confusion = confusion.reduce(accelerator)
        gathered = accelerator.gather(torch.tensor([[count, with_scores]], device=accelerator.device))
        counts, with_scores = gathered[:, 0].cpu().tolist(), int(gathered[:, 1].sum())
    results = compute_segmentation_metrics(confusion, class_names=names, unseen_classes=unseen)
    results.update(
        num_images=sum(counts),
        num_processes=len(counts),
        images_per_process=counts,
        ensemble_applied=ensemble_on and with_scores > 0,
        unseen_classes_known_to_generator=sorted({c for covered in known.values() for c in covered}),
        confusion_matrix=confusion,
    )
    return results
