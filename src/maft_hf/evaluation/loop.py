"""Evaluate a MAFT model on a semantic-segmentation dataset: the loop behind `scripts/evaluate.py`.

[`evaluate_segmentation`] streams a `datasets.Dataset` (or `IterableDataset`) of `(image, label map)` pairs in batches,
segments every image with [`~maft_hf.inference.pipeline.segment`] (proposals from a generator, one image at a time, MAFT's
class scores, optionally the Eq. 9 ensemble) at the image's own size, and accumulates an exact
[`~maft_hf.evaluation.metrics.ConfusionMatrix`]. The scores are those of [`~maft_hf.evaluation.metrics.compute_segmentation_metrics`]
(detectron2 v0.6 conventions, percent).

Several processes (`accelerate launch`): each process evaluates its own shard, without duplicates (contiguous index
ranges from `Accelerator.split_between_processes` for a map-style dataset, `datasets.distributed.split_dataset_by_node`
for an iterable one), and the confusion matrices are summed across processes ([`ConfusionMatrix.reduce`]). The counts
are integers, so any number of processes gives exactly the same matrix as one.

Bad inputs fail before the loop, on every process alike: a missing image or label column (the columns present are
named), a vocabulary whose size disagrees with the class names or benchmark metadata stored in the dataset, and label
ids outside `[0, C)` other than the ignore index or label maps of another size than their image, found in a quick scan
of the first samples. A label map of another size than its image later in the set stops the loop with the
confusion matrix's message and the sample it came from.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..data.labels import get_class_names
from ..inference.pipeline import check_proposals, load_images, resolve_proposal_generator, segment
from ..inference.semantic_map import DEFAULT_ENSEMBLE_WEIGHT, match_generator_scores
from ..inference.text_classifier import build_text_classifier
from ..inference.vocabulary import load_vocabulary
from ..model.processing_maft import load_image
from .metrics import ConfusionMatrix, compute_segmentation_metrics

logger = logging.getLogger(__name__)

BENCHMARK_METADATA_MARKER = "maft_hf_benchmark="  # written by maft_hf.data.benchmarks.build_benchmark_dataset
DEFAULT_NUM_CHECK_SAMPLES = 4
FILE_NAME_COLUMN = "file_name"


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def _is_iterable_dataset(dataset) -> bool:
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def dataset_benchmark_metadata(dataset) -> dict | None:
    """The benchmark description that `build_benchmark_dataset` stores in `info.description` (number of classes,
    ignore index, unseen classes, ...), or None for other datasets."""
    info = getattr(dataset, "info", None)
    for line in ((info.description or "") if info is not None else "").splitlines():
        if line.startswith(BENCHMARK_METADATA_MARKER):
            return json.loads(line[len(BENCHMARK_METADATA_MARKER) :])
    return None


def dataset_columns(dataset) -> list[str]:
    """Column names of a `Dataset` or `IterableDataset` (read from the first example when the features are unknown)."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        first = next(iter(dataset), None)
        names = list(first) if isinstance(first, dict) else []
    return list(names)


def check_dataset_columns(dataset, image_column: str = "image", label_column: str = "label") -> None:
    """Raise a `ValueError` naming the columns present when the image or the label column is missing."""
    columns = dataset_columns(dataset)
    for what, column in (("label", label_column), ("image", image_column)):
        if column not in columns:
            raise ValueError(
                f"The dataset has no {what} column {column!r}; its columns are {columns}. Pass the right name "
                f"(`{what}_column=` / `--{what}_column`)."
            )


def label_array(label) -> np.ndarray:
    """A label map (PIL image, array, nested list or `{"bytes": ...}` dict) as an `(H, W)` integer NumPy array.

    8-bit ("L", "P") maps decode to uint8 and 16-bit ("I;16") ones to uint16, exactly the stored ids.
    """
    from PIL import Image

    if isinstance(label, dict) and label.get("bytes") is not None:
        import io

        with Image.open(io.BytesIO(label["bytes"])) as opened:
            label = opened.copy()
    elif isinstance(label, dict) and label.get("path"):
        with Image.open(label["path"]) as opened:
            label = opened.copy()
    mode = getattr(label, "mode", None)
    array = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label)
    if array.dtype.kind not in "iub":
        raise ValueError(f"Label maps must hold integer class ids, got dtype {array.dtype}.")
    if array.ndim != 2:
        shown = f" (PIL mode {mode!r})" if mode else ""
        raise ValueError(
            f"Label maps must be single-channel (H, W) class-id maps, got shape {array.shape}{shown}; a colour "
            "(palette-rendered) annotation must be converted to class ids first (scripts/prepare_benchmark.py)."
        )
    return array


def _first_rows(dataset, count: int) -> list[dict]:
    if _is_iterable_dataset(dataset):
        return list(itertools.islice(iter(dataset), count))
    return [dataset[i] for i in range(min(count, len(dataset)))]


def _describe(position: int, row: dict) -> str:
    name = row.get(FILE_NAME_COLUMN)
    return f"sample {position}" + (f" ({name})" if name else "")


def check_labels(
    dataset,
    num_classes: int,
    ignore_index: int | None = 255,
    image_column: str = "image",
    label_column: str = "label",
    num_samples: int = DEFAULT_NUM_CHECK_SAMPLES,
) -> None:
    """Quick scan of the first `num_samples` examples: label maps decode to `(H, W)` ids, have their image's size and
    hold only ids in `[0, num_classes)` or `ignore_index`. Raises a `ValueError` saying what to change otherwise."""
    bad_ids: set[int] = set()
    for position, row in enumerate(_first_rows(dataset, num_samples)):
        try:
            label = label_array(row[label_column])
        except ValueError as err:
            raise ValueError(f"{_describe(position, row)}: {err}") from err
        image = load_image(row[image_column])
        if label.shape != (image.height, image.width):
            raise ValueError(
                f"{_describe(position, row)}: the label map is (H, W) = {tuple(label.shape)} but its image is "
                f"{(image.height, image.width)}; predictions are made at the image's size, so every label map must "
                "have the size of its image."
            )
        values = np.unique(label).astype(np.int64)
        keep = values != ignore_index if ignore_index is not None else np.ones_like(values, dtype=bool)
        bad_ids.update(int(v) for v in values[keep] if not 0 <= v < num_classes)
    if bad_ids:
        shown = sorted(bad_ids)[:20]
        raise ValueError(
            f"The labels hold class ids {shown}{' ...' if len(bad_ids) > 20 else ''} (first {num_samples} samples "
            f"scanned), but the vocabulary has {num_classes} classes (ids 0..{num_classes - 1}) and the ignore "
            f"index is {ignore_index}: the vocabulary does not match the dataset's labels. Pass the dataset's own "
            "vocabulary (in label-id order) and its ignore index."
        )


def check_dataset_metadata(dataset, class_names: Sequence[str], ignore_index: int | None) -> None:
    """Compare the vocabulary and the ignore index with what the dataset says about itself (stored class names,
    benchmark metadata of `scripts/prepare_benchmark.py`); raise a `ValueError` on a mismatch."""
    stored = get_class_names(dataset)
    if stored is not None and len(stored) != len(class_names):
        raise ValueError(
            f"The vocabulary has {len(class_names)} classes but the dataset's labels index {len(stored)} stored "
            f"class names ({stored[:5]}...); label id i is class i of the dataset's own vocabulary."
        )
    metadata = dataset_benchmark_metadata(dataset)
    if metadata is None:
        return
    if metadata.get("num_classes") not in (None, len(class_names)):
        raise ValueError(
            f"The dataset is the {metadata.get('benchmark')} benchmark with {metadata['num_classes']} classes, but the "
            f"vocabulary has {len(class_names)} classes."
        )
    if metadata.get("ignore_index") not in (None, ignore_index):
        raise ValueError(
            f"The dataset is the {metadata.get('benchmark')} benchmark, whose ignore index is "
            f"{metadata['ignore_index']}, but ignore_index={ignore_index} was given."
        )


# ---------------------------------------------------------------------------------------------------------------
# Sharding and batches
# ---------------------------------------------------------------------------------------------------------------
def limit_samples(dataset, max_samples: int | None):
    """The first `max_samples` examples (all when None)."""
    if max_samples is None:
        return dataset
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}.")
    if _is_iterable_dataset(dataset):
        return dataset.take(max_samples)
    return dataset.select(range(min(max_samples, len(dataset))))


def shard_dataset(dataset, accelerator=None) -> tuple[Any, list[int] | None]:
    """This process's part of `dataset`: `(dataset, indices)` for a map-style dataset (a contiguous range of indices,
    no sample repeated on any process) or `(sharded iterable dataset, None)`."""
    rank = 0 if accelerator is None else accelerator.process_index
    world = 1 if accelerator is None else accelerator.num_processes
    if _is_iterable_dataset(dataset):
        if world == 1:
            return dataset, None
        from datasets.distributed import split_dataset_by_node

        return split_dataset_by_node(dataset, rank=rank, world_size=world), None
    indices = list(range(len(dataset)))
    if world == 1:
        return dataset, indices
    with accelerator.split_between_processes(indices) as shard:  # contiguous ranges, no padding
        return dataset, list(shard)


def iterate_batches(dataset, indices: list[int] | None, batch_size: int) -> Iterator[list[tuple[int, dict]]]:
    """Batches of `(position, row)`: `position` is the dataset index (map-style) or the running count of this
    process's examples (iterable)."""
    if indices is not None:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            columns = dataset[chunk]  # dict of lists, decoded
            rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
            yield list(zip(chunk, rows))
        return
    iterator = enumerate(iter(dataset))
    while batch := list(itertools.islice(iterator, batch_size)):
        yield batch


# ---------------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------------
def _resolve_unseen(unseen_classes, class_names: Sequence[str]) -> list[int] | None:
    if unseen_classes is None:
        return None
    ids = []
    for item in unseen_classes:
        if isinstance(item, str):
            if item not in class_names:
                raise ValueError(f"Unseen class {item!r} is not one of the {len(class_names)} vocabulary classes.")
            ids.append(list(class_names).index(item))
        else:
            if not 0 <= int(item) < len(class_names):
                raise ValueError(f"Unseen class id {item} is outside [0, {len(class_names)}).")
            ids.append(int(item))
    if not ids:
        raise ValueError("unseen_classes is empty; pass None for a benchmark without unseen classes.")
    return sorted(set(ids))


def unseen_classes_known_to_generator(proposals, class_names: Sequence[str], unseen: Sequence[int]) -> list[str]:
    """Unseen vocabulary classes that the proposal generator has class scores for (matched by name, as the Eq. 9
    ensemble matches them). Non-empty means that the ensemble gives the generator's supervised scores to "unseen"
    classes, which breaks a zero-shot protocol (e.g. a COCO-panoptic Mask2Former knows giraffe and cow)."""
    if proposals.class_scores is None or not unseen:
        return []
    _, seen = match_generator_scores(proposals.class_scores[:1], proposals.class_names, class_names)
    return [class_names[i] for i in unseen if bool(seen[i])]


def _track_unseen_known(known: dict, proposals, class_names: Sequence[str], unseen: Sequence[int]) -> None:
    """Record (once per generator vocabulary, with a warning) the unseen classes a generator has scores for."""
    for item in proposals:
        key = tuple(item.class_names or ())
        if key and key not in known:
            known[key] = unseen_classes_known_to_generator(item, class_names, unseen)
            if known[key]:
                logger.warning(
                    "The proposal generator has class scores for the unseen classes %s; with the Eq. 9 ensemble "
                    "they reach those classes, which is not zero-shot. Use ensemble_weight=0 (or a generator trained "
                    "on the seen classes only) for the zero-shot protocol.",
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
    num_check_samples: int = DEFAULT_NUM_CHECK_SAMPLES,
    progress: bool = True,
) -> dict[str, Any]:
    """Semantic-segmentation scores of a MAFT model on a dataset (single or multi-process).

    Args:
        model: a `MaskAwareCLIPModel`; moved to `accelerator.device` when an accelerator is given.
        processor: its `MAFTProcessor` (the tokenizer is used unless `text_classifier` is given).
        dataset: a `datasets.Dataset` or `IterableDataset` with an image column (RGB or any mode; converted to RGB)
            and a label column (`(H, W)` class ids at the image's size, `ignore_index` = unlabelled).
        class_names: the vocabulary, label id `i` = `class_names[i]` (a list, a shipped vocabulary name or a file).
        proposal_generator: a [`~maft_hf.proposals.ProposalGenerator`] or a spec string (`"grid:4"`, ...). It is
            called one image at a time, so the results do not depend on the batch size or the number of processes.
        accelerator: an `accelerate.Accelerator`; each process evaluates a disjoint shard and the confusion matrices
            are summed. None: one process, the model's device.
        ensemble_weight: `lambda` of paper Eq. 9 (applies only to proposals with class scores; 0 or None = MAFT
            alone, as the released inference).
        batch_size: images per MAFT forward pass (per process).
        unseen_classes: ids or names of the unseen classes of a zero-shot split: adds seen / unseen mIoU and hIoU.
        ignore_index: label value not evaluated (255; 65535 for the 16-bit A-847 and PC-459 maps; None: none).
        image_column, label_column: column names.
        max_samples: evaluate only the first `max_samples` examples.
        text_classifier: a precomputed `(C, projection_dim)` classifier for `class_names`.
        templates: prompt templates (default: the 14 of the released code).
        cache: text-classifier cache (a `TextClassifierCache` or a directory).
        num_check_samples: how many examples the pre-loop label scan reads.
        progress: show a tqdm bar (main process only).

    Returns:
        The dict of [`~maft_hf.evaluation.metrics.compute_segmentation_metrics`] (percent; `mIoU`, `pAcc`, `per_class_iou`,
        excluded classes, and with `unseen_classes` also `mIoU_seen`, `mIoU_unseen`, `hIoU`) plus
        - `"num_images"`: images evaluated over all processes;
        - `"num_processes"` and `"images_per_process"` (`list[int]`, sums to `num_images`);
        - `"ensemble_applied"`: whether the Eq. 9 ensemble was used (a non-zero weight and a generator with class
          scores);
        - `"unseen_classes_known_to_generator"`: unseen classes that the ensemble scored with the generator's own
          (supervised) class scores, as seen by this process; non-empty means the run is not zero-shot (a warning is
          logged);
        - `"confusion_matrix"`: the summed [`~maft_hf.evaluation.metrics.ConfusionMatrix`] (on CPU, on every process).

    Raises:
        ValueError: see the module docstring (all raised before the loop except a label map whose size differs
            from its image's beyond the scanned samples, which names that sample).

    Example:

    ```python
    >>> from maft_hf.evaluation.loop import evaluate_segmentation
    >>> results = evaluate_segmentation(model, processor, dataset, "ade20k_150", "grid:4")  # doctest: +SKIP
    >>> results["mIoU"], results["num_images"]  # doctest: +SKIP
    ```
    """
    from tqdm.auto import tqdm

    names = load_vocabulary(class_names)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if ensemble_weight is not None and not 0.0 <= float(ensemble_weight) <= 1.0:
        raise ValueError(f"ensemble_weight must lie in [0, 1] (0 or None = off), got {ensemble_weight}.")
    if ignore_index is not None and 0 <= ignore_index < len(names):
        raise ValueError(
            f"ignore_index {ignore_index} is a class id of the {len(names)}-class vocabulary (ids 0..{len(names) - 1});"
            " it must lie outside: 255 for 8-bit label maps, 65535 for the 16-bit maps of more than 255 classes."
        )
    unseen = _resolve_unseen(unseen_classes, names)
    check_dataset_columns(dataset, image_column, label_column)
    check_dataset_metadata(dataset, names, ignore_index)
    dataset = limit_samples(dataset, max_samples)
    if not _is_iterable_dataset(dataset) and len(dataset) == 0:
        raise ValueError("The dataset is empty: nothing to evaluate.")
    check_labels(dataset, len(names), ignore_index, image_column, label_column, num_check_samples)
    generator = resolve_proposal_generator(proposal_generator)

    columns = [c for c in (image_column, label_column, FILE_NAME_COLUMN) if c in dataset_columns(dataset)]
    dataset = dataset.select_columns(columns)
    if accelerator is not None:
        model.to(accelerator.device)
        device = accelerator.device
    else:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    if text_classifier is None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("processor has no tokenizer: pass a MAFTProcessor or a precomputed text_classifier.")
        # With a disk cache the main process writes it first and the others read it.
        first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
        with first:
            text_classifier = build_text_classifier(model, tokenizer, names, templates=templates, cache=cache)

    shard, indices = shard_dataset(dataset, accelerator)
    is_main = accelerator is None or accelerator.is_local_main_process
    bar = tqdm(
        total=len(indices) if indices is not None else None,
        desc="evaluate" if accelerator is None or accelerator.num_processes == 1 else "evaluate (process 0 shard)",
        unit="image",
        disable=not (progress and is_main),
    )
    confusion = ConfusionMatrix(len(names), ignore_index=ignore_index, device=device)
    count, with_generator_scores = 0, 0
    known_unseen: dict[tuple, list[str]] = {}  # generator class names -> unseen classes they cover
    for batch in iterate_batches(shard, indices, batch_size):
        images = load_images([row[image_column] for _, row in batch])
        proposals = [check_proposals(generator([image]), [image])[0] for image in images]
        with_generator_scores += sum(item.class_scores is not None for item in proposals)
        if unseen and ensemble_weight:
            _track_unseen_known(known_unseen, proposals, names, unseen)
        outputs = segment(
            images,
            names,
            model,
            processor,
            ensemble_weight=ensemble_weight,
            proposals=proposals,
            text_classifier=text_classifier,
            batch_size=len(images),
        )
        for (position, row), output in zip(batch, outputs):
            try:
                confusion.update(output["segmentation"], label_array(row[label_column]))
            except ValueError as err:
                where = _describe(position, row)
                if accelerator is not None and indices is None and accelerator.num_processes > 1:
                    where += f" of process {accelerator.process_index}"
                raise ValueError(
                    f"{where}: {err} The prediction has the image's size (H, W) = {tuple(output['segmentation'].shape)}"
                    "; every label map must have the size of its image and hold only vocabulary ids or the ignore "
                    "index."
                ) from err
        count += len(batch)
        bar.update(len(batch))
    bar.close()

    if accelerator is not None:
        confusion = confusion.reduce(accelerator)
        gathered = accelerator.gather(torch.tensor([[count, with_generator_scores]], device=accelerator.device))
        counts, with_generator_scores = gathered[:, 0].cpu().tolist(), int(gathered[:, 1].sum())
    else:
        confusion = ConfusionMatrix.from_matrix(confusion.matrix.cpu(), ignore_index=ignore_index)
        counts = [count]
    results = compute_segmentation_metrics(confusion, class_names=names, unseen_classes=unseen)
    results.update(
        num_images=int(sum(counts)),
        num_processes=len(counts),
        images_per_process=[int(c) for c in counts],
        ensemble_applied=bool(ensemble_weight) and with_generator_scores > 0,
        unseen_classes_known_to_generator=sorted({c for covered in known_unseen.values() for c in covered}),
        confusion_matrix=confusion,
    )
    return results


__all__ = [
    "BENCHMARK_METADATA_MARKER",
    "check_dataset_columns",
    "check_dataset_metadata",
    "check_labels",
    "dataset_benchmark_metadata",
    "dataset_columns",
    "evaluate_segmentation",
    "iterate_batches",
    "label_array",
    "unseen_classes_known_to_generator",
    "limit_samples",
    "shard_dataset",
]
