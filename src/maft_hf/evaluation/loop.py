"""The evaluation loop ([`evaluate_segmentation`]): segment every `(image, label map)` pair of a dataset and count an
exact confusion matrix, independent of batch size and number of processes (each process a disjoint shard; the int
matrices are summed). With a `progress_dir` each process saves its partial matrix every `save_every` images and
`resume=True` continues it exactly. Bad inputs fail before the first image, on every process alike.
"""

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

from ..data.labels import dataset_metadata, label_map_array
from ..inference.pipeline import _call, _released_ensemble_check, check_proposals, resolve_proposal_generator, segment
from ..inference.semantic_map import DEFAULT_ENSEMBLE_WEIGHT, match_generator_scores
from ..inference.text_classifier import build_text_classifier
from ..inference.vocabulary import load_vocabulary, unseen_class_ids
from ..model.images import load_image, load_images
from ..proposals import Proposals
from .metrics import ConfusionMatrix, compute_segmentation_metrics
from .progress import ProgressFile

logger = logging.getLogger(__name__)

DEFAULT_NUM_CHECK_SAMPLES = 4
DEFAULT_SAVE_EVERY = 50
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
) -> None:
    """Fail early: missing columns, a vocabulary disagreeing with the dataset's stored class names or benchmark, and
    (in the first `samples` rows) label ids outside `[0, C)` other than the ignore index, or label maps of another
    size than their image. A `ValueError` says what to change."""
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
    if benchmark.get("num_classes") not in (None, len(class_names)):
        raise ValueError(
            f"The dataset is the {benchmark.get('benchmark')} benchmark with {benchmark['num_classes']} classes, but "
            f"the vocabulary has {len(class_names)} classes."
        )
    if benchmark.get("ignore_index") not in (None, ignore_index):
        raise ValueError(
            f"The dataset is the {benchmark.get('benchmark')} benchmark, whose ignore index is "
            f"{benchmark['ignore_index']}, but ignore_index={ignore_index} was given."
        )
    if _is_iterable_dataset(dataset):
        first = itertools.islice(iter(dataset), samples)
    else:
        first = [dataset[i] for i in range(min(samples, len(dataset)))]
    bad: set[int] = set()
    for position, row in enumerate(first):
        try:
            label = label_map_array(row[label_column])
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
        bad.update(int(v) for v in values if v != ignore_index and not 0 <= v < len(class_names))
    if bad:
        raise ValueError(
            f"The labels hold class ids {sorted(bad)[:20]}{' ...' if len(bad) > 20 else ''} (first {samples} samples "
            f"scanned), but the vocabulary has {len(class_names)} classes (ids 0..{len(class_names) - 1}) and the "
            f"ignore index is {ignore_index}: the vocabulary does not match the dataset's labels. Pass the dataset's "
            "own vocabulary (in label-id order) and its ignore index."
        )


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
    """This process's part: `(dataset, contiguous indices)` of a map-style dataset, `(sharded dataset, None)` of an
    iterable one. No sample is repeated on any process (no padding)."""
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    if _is_iterable_dataset(dataset):
        if world == 1:
            return dataset, None
        from datasets.distributed import split_dataset_by_node

        return split_dataset_by_node(dataset, rank=rank, world_size=world), None
    indices = list(range(len(dataset)))
    if world == 1:
        return dataset, indices
    with accelerator.split_between_processes(indices) as shard:
        return dataset, list(shard)


def iterate_batches(dataset, indices: list[int] | None, batch_size: int, skip: int = 0) -> Iterator[list]:
    """Batches of `(position, row)` after the first `skip` examples (position: dataset index, or running count)."""
    if indices is not None:
        for start in range(skip, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            columns = dataset[chunk]  # dict of lists, decoded
            yield list(zip(chunk, [dict(zip(columns, values)) for values in zip(*columns.values())]))
        return
    iterator = itertools.islice(enumerate(iter(dataset)), skip, None)
    while batch := list(itertools.islice(iterator, batch_size)):
        yield batch


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
                    "The proposal generator has class scores for the unseen classes %s; with the Eq. 9 ensemble "
                    "they reach those classes, which is not zero-shot. Use ensemble_weight=0 (or a generator trained "
                    "on the seen classes only) for the zero-shot protocol.",
                    known[key],
                )


def _run_key(dataset, names, ignore_index, ensemble_weight, unseen, max_samples, segment_kwargs, world, run_key):
    return {
        "class_names_sha256": hashlib.sha256(json.dumps(list(names)).encode()).hexdigest(),
        "ignore_index": ignore_index,
        "ensemble_weight": ensemble_weight,
        "unseen_classes": unseen,
        "max_samples": max_samples,
        "num_examples": None if _is_iterable_dataset(dataset) else len(dataset),
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "segment_kwargs": repr(sorted(segment_kwargs.items())),
        "num_processes": world,
        **dict(run_key or {}),
    }


def _evaluate_shard(state: dict, generator, model, processor, text_classifier, settings: dict, progress_file) -> None:
    """Count this process's shard into `state`, saving progress."""
    from tqdm.auto import tqdm

    names, unseen, label_column = settings["names"], settings["unseen"], settings["label_column"]
    shard, indices, accelerator = settings["shard"], settings["indices"], settings["accelerator"]
    is_main = accelerator is None or accelerator.is_local_main_process
    bar = tqdm(
        total=len(indices) if indices is not None else None,
        initial=state["count"],
        desc="evaluate" if accelerator is None or accelerator.num_processes == 1 else "evaluate (process 0 shard)",
        unit="image",
        disable=not (settings["progress"] and is_main),
    )
    released = settings["segment_kwargs"].get("preprocessing") == "released"
    on_canvas = released and hasattr(generator, "propose_on_canvas")
    for batch in iterate_batches(shard, indices, settings["batch_size"], skip=state["count"]):
        images = load_images([row[settings["image_column"]] for _, row in batch])
        if on_canvas:  # segment() asks the generator for proposals on the padded canvas, as the release does
            proposals = None
            scored = [Proposals(torch.zeros(1, 1, 1), torch.zeros(1, len(names)), list(names))]  # it scores `names`
        else:
            proposals = [
                check_proposals(_call(generator, generator, [image], names, text_classifier), [image])[0]
                for image in images
            ]
            scored = [item for item in proposals if item.class_scores is not None]
        state["with_scores"] += len(images) if on_canvas else len(scored)
        if unseen and settings["ensemble_weight"]:
            _track_unseen_known(state["known"], scored, names, unseen)
        outputs = segment(
            images,
            names,
            model,
            processor,
            generator if on_canvas else None,
            ensemble_weight=settings["ensemble_weight"],
            proposals=proposals,
            text_classifier=text_classifier,
            batch_size=len(images),
            **settings["segment_kwargs"],
        )
        for (position, row), output in zip(batch, outputs):
            try:
                state["confusion"].update(output["segmentation"], label_map_array(row[label_column]))
            except ValueError as err:
                where = _describe(position, row)
                if accelerator is not None and indices is None and accelerator.num_processes > 1:
                    where += f" of process {accelerator.process_index}"
                raise ValueError(
                    f"{where}: {err} The prediction has the image's size (H, W) = {tuple(output['segmentation'].shape)}"
                    "; every label map must have the size of its image and hold only vocabulary ids or the ignore "
                    "index."
                ) from err
        state["count"] += len(batch)
        bar.update(len(batch))
        if progress_file is not None:
            progress_file.save(state["confusion"].matrix, state["count"], _extra(state))
    bar.close()
    if progress_file is not None:
        progress_file.save(state["confusion"].matrix, state["count"], _extra(state), force=True)


def _extra(state: dict) -> dict:
    return {"with_scores": state["with_scores"], "known": state["known"]}


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
    segment_kwargs: Mapping[str, Any] | None = None,
    progress_dir: str | os.PathLike | None = None,
    save_every: int = DEFAULT_SAVE_EVERY,
    resume: bool = False,
    run_key: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Semantic-segmentation scores of a MAFT model on a dataset (single or multi-process).

    Args:
        model, processor: a `MaskAwareCLIPModel` (moved to `accelerator.device`) and its `MAFTProcessor`.
        dataset: a `datasets.Dataset` or `IterableDataset`; the label column holds `(H, W)` class ids at the image's
            size (`ignore_index` = unlabelled: 255, 65535 for the 16-bit A-847 / PC-459 maps, None: none).
        class_names: the vocabulary, label id `i` = `class_names[i]` (a list, a shipped name or a file).
        proposal_generator: a `ProposalGenerator` or spec string, called one image at a time (with `class_names=`
            and `text_classifier=` when it `needs_vocabulary`).
        accelerator: an `accelerate.Accelerator` (each process a disjoint shard), or None.
        ensemble_weight: `lambda` of paper Eq. 9 (0 or None = MAFT alone, as the released inference).
        unseen_classes: ids or names of the unseen classes of a zero-shot split: adds seen / unseen mIoU and hIoU.
        segment_kwargs: further keyword arguments of every `segment` call.
        progress_dir: where each process saves its partial matrix every `save_every` images; with `resume`, the
            saved progress of the same run (`run_key` + the settings above) is continued.

    Returns:
        The dict of `compute_segmentation_metrics` (percent) plus `num_images`, `num_processes`,
        `images_per_process`, `ensemble_applied`, `unseen_classes_known_to_generator` (non-empty: not zero-shot) and
        `confusion_matrix` (the summed `ConfusionMatrix`, on CPU, on every process).
    """
    names = load_vocabulary(class_names)
    segment_kwargs = dict(segment_kwargs or {})
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if ensemble_weight is not None and not 0.0 <= float(ensemble_weight) <= 1.0:
        raise ValueError(f"ensemble_weight must lie in [0, 1] (0 or None = off), got {ensemble_weight}.")
    if ignore_index is not None and 0 <= ignore_index < len(names):
        raise ValueError(
            f"ignore_index {ignore_index} is a class id of the {len(names)}-class vocabulary (ids 0..{len(names) - 1});"
            " it must lie outside: 255 for 8-bit label maps, 65535 for the 16-bit maps of more than 255 classes."
        )
    unseen = None if unseen_classes is None else unseen_class_ids(unseen_classes, names)
    if unseen is not None and not unseen:
        raise ValueError("unseen_classes is empty; pass None for a benchmark without unseen classes.")
    dataset = limit_samples(dataset, max_samples)
    if not _is_iterable_dataset(dataset) and len(dataset) == 0:
        raise ValueError("The dataset is empty: nothing to evaluate.")
    check_dataset(dataset, names, ignore_index, image_column, label_column, num_check_samples)
    generator = resolve_proposal_generator(proposal_generator)
    _released_ensemble_check(generator, (segment_kwargs or {}).get("ensemble_formula", "paper"))
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    progress_file = None
    if progress_dir is not None:
        key = _run_key(
            dataset, names, ignore_index, ensemble_weight, unseen, max_samples, segment_kwargs, world, run_key
        )
        progress_file = ProgressFile(progress_dir, rank, world, key, save_every)

    dataset = dataset.select_columns(
        [c for c in (image_column, label_column, FILE_NAME_COLUMN) if c in dataset_columns(dataset)]
    )
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    model.to(device).eval()
    if text_classifier is None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("processor has no tokenizer: pass a MAFTProcessor or a precomputed text_classifier.")
        # With a disk cache the main process writes it first and the others read it.
        first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
        with first:
            text_classifier = build_text_classifier(model, tokenizer, names, templates=templates, cache=cache)

    state = {"confusion": ConfusionMatrix(len(names), ignore_index, device=device), "count": 0, "with_scores": 0}
    state["known"] = {}  # generator vocabulary (JSON) -> the unseen classes it has scores for
    saved = progress_file.load() if progress_file is not None and resume else None
    if saved is not None:
        state["confusion"].matrix += torch.from_numpy(saved["matrix"]).to(device)
        state.update(count=saved["count"], with_scores=saved["extra"]["with_scores"], known=saved["extra"]["known"])
        logger.info("Resuming process %d after %d image(s) from %s", rank, saved["count"], progress_file.path)
    shard, indices = shard_dataset(dataset, accelerator)
    settings = {
        "names": names, "unseen": unseen, "ensemble_weight": ensemble_weight, "batch_size": batch_size,
        "image_column": image_column, "label_column": label_column, "shard": shard, "indices": indices,
        "accelerator": accelerator, "progress": progress, "segment_kwargs": segment_kwargs,
    }  # fmt: skip
    _evaluate_shard(state, generator, model, processor, text_classifier, settings, progress_file)
    return _results(state, accelerator, names, unseen, ensemble_weight, ignore_index)


def _results(state: dict, accelerator, names, unseen, ensemble_weight, ignore_index) -> dict[str, Any]:
    confusion, count, with_scores = state["confusion"], state["count"], state["with_scores"]
    if accelerator is not None:
        confusion = confusion.reduce(accelerator)
        gathered = accelerator.gather(torch.tensor([[count, with_scores]], device=accelerator.device))
        counts, with_scores = gathered[:, 0].cpu().tolist(), int(gathered[:, 1].sum())
    else:
        confusion, counts = ConfusionMatrix.from_matrix(confusion.matrix.cpu(), ignore_index=ignore_index), [count]
    results = compute_segmentation_metrics(confusion, class_names=names, unseen_classes=unseen)
    results.update(
        num_images=int(sum(counts)),
        num_processes=len(counts),
        images_per_process=[int(c) for c in counts],
        ensemble_applied=bool(ensemble_weight) and with_scores > 0,
        unseen_classes_known_to_generator=sorted({c for covered in state["known"].values() for c in covered}),
        confusion_matrix=confusion,
    )
    return results
