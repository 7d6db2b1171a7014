"""Semantic-segmentation metrics of the MAFT benchmarks as detectron2 v0.6 `SemSegEvaluator` computes them (paper Tab. 1
and 3), in percent: one exact confusion matrix, ignored pixels skipped, classes absent from both ground truth and
predictions left out of every mean; zero-shot splits add seen / unseen mIoU and hIoU. [`load_metric`]: as a metric."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference.vocabulary import unseen_class_ids

METRIC_PATH = Path(__file__).resolve().parent / "mean_iou_maft"


def _as_index_tensor(values: Any, what: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        array = np.asarray(values)
        values = torch.from_numpy(array.astype(np.int64, copy=False)) if array.dtype.kind in "iub" else array
    if not isinstance(values, torch.Tensor) or values.dtype.is_floating_point or values.dtype.is_complex:
        raise ValueError(f"{what} must hold integer class ids, got dtype {values.dtype}.")
    return values.to(torch.int64)


class ConfusionMatrix:
    """Exact pixel confusion matrix: `matrix[g, p]` (int64, `(C, C)`) counts the pixels of ground truth `g` predicted
    as `p`; pixels whose ground truth is `ignore_index` (255, or 65535 for A-847 / PC-459; None: none) are skipped.
    Example: `ConfusionMatrix(3).update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]])).matrix` is
    `[[1, 0, 0], [0, 1, 1], [0, 0, 0]]`, with `.compute()["mIoU"]` 50.0."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is a valid class id for num_classes={num_classes}; it must lie outside "
                f"[0, {num_classes}): 255 for 8-bit label maps, 65535 for the 16-bit maps of more than 255 classes."
            )
        self.num_classes, self.ignore_index = int(num_classes), ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    @classmethod
    def from_matrix(cls, matrix: Any, ignore_index: int | None = 255) -> ConfusionMatrix:
        """A copy of a `(C, C)` count matrix (rows = ground truth, columns = predictions)."""
        counts = _as_index_tensor(matrix, "matrix")
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"matrix must be square (C, C), got shape {tuple(counts.shape)}.")
        if (counts < 0).any():
            raise ValueError("matrix must hold non-negative pixel counts.")
        out = cls(counts.shape[0], ignore_index=ignore_index, device=counts.device)
        out.matrix = counts.clone()
        return out

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, predictions: Any, references: Any) -> ConfusionMatrix:
        """Add the pixels of one `(H, W)` map or a `(B, H, W)` batch of class ids (tensors or arrays); returns `self`.
        Ids outside `[0, C)` (other than the ignore index in the references) raise `ValueError`."""
        preds = _as_index_tensor(predictions, "predictions").to(self.matrix.device)
        refs = _as_index_tensor(references, "references").to(self.matrix.device)
        if preds.shape != refs.shape:
            raise ValueError(
                f"predictions and references must have the same shape, got predictions {tuple(preds.shape)} and "
                f"references {tuple(refs.shape)}."
            )
        if preds.ndim not in (2, 3):
            raise ValueError(f"expected (H, W) or (B, H, W) label maps, got shape {tuple(preds.shape)}.")
        refs, preds = refs.reshape(-1), preds.reshape(-1)
        if self.ignore_index is not None:
            keep = refs != self.ignore_index
            refs, preds = refs[keep], preds[keep]
        for ids, what in ((refs, "references"), (preds, "predictions")):
            bad = torch.unique(ids[(ids < 0) | (ids >= self.num_classes)]).tolist()
            if bad:
                raise ValueError(
                    f"{what} contain class ids {bad[:20] + (['...'] if len(bad) > 20 else [])} outside "
                    f"[0, {self.num_classes}) that are not the ignore index {self.ignore_index}."
                )
        counts = torch.bincount(refs * self.num_classes + preds, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """A new matrix holding the counts of both (e.g. of two evaluation shards)."""
        out = ConfusionMatrix.from_matrix(self.matrix, self.ignore_index)
        out += other
        return out

    __add__ = merge

    def __radd__(self, other: Any) -> ConfusionMatrix:
        if isinstance(other, int) and other == 0:  # `sum(matrices)` starts from the int 0
            return ConfusionMatrix.from_matrix(self.matrix, self.ignore_index)
        return self.merge(other)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix):
            raise ValueError(f"can only merge a ConfusionMatrix, got {type(other).__name__}.")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a matrix of {other.num_classes} classes (ignore {other.ignore_index}) into one of "
                f"{self.num_classes} classes (ignore {self.ignore_index})."
            )
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def reduce(self, accelerator: Any) -> ConfusionMatrix:
        """The sum over all processes as a new CPU matrix (a collective: every process calls it). Shard without
        duplicates (`Accelerator.split_between_processes`): padded batches would count twice."""
        summed = accelerator.reduce(self.matrix.to(accelerator.device), reduction="sum")
        return ConfusionMatrix.from_matrix(summed.cpu(), self.ignore_index)

    def compute(
        self, class_names: Sequence[str] | None = None, unseen_classes: Iterable[int | str] | None = None
    ) -> dict[str, Any]:
        return compute_segmentation_metrics(self, class_names=class_names, unseen_classes=unseen_classes)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )


def _mean_over(values: torch.Tensor, selected: torch.Tensor) -> float:
    return float(values[selected].mean()) * 100.0  # nan when nothing is selected


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU of paper section 5.1: `2 * seen * unseen / (seen + unseen)`; 0 when both are 0, nan when either is nan."""
    return 2.0 * seen * unseen / (seen + unseen) if seen + unseen else 0.0


def compute_segmentation_metrics(
    confusion: ConfusionMatrix | torch.Tensor | np.ndarray,
    class_names: Sequence[str] | None = None,
    unseen_classes: Iterable[int | str] | None = None,
) -> dict[str, Any]:
    """Scores of a confusion matrix (or its `(C, C)` counts), detectron2 v0.6 conventions, in percent: `mIoU`, `fwIoU`,
    `mAcc`, `pAcc`, `per_class_iou`, `per_class_accuracy` (nan where undefined), `num_classes`, `num_evaluated_classes`,
    `num_excluded_classes`, `excluded_classes` (+ `excluded_class_names`); with `unseen_classes` (ids, or names with
    `class_names`) also `mIoU_seen`, `mIoU_unseen`, `hIoU`, `num_evaluated_[un]seen_classes` and `unseen_classes`."""
    if not isinstance(confusion, ConfusionMatrix):
        confusion = ConfusionMatrix.from_matrix(confusion)
    counts = confusion.matrix.detach().to(device="cpu", dtype=torch.float64)
    num_classes = counts.shape[0]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for a confusion matrix of {num_classes} classes.")
    true_positive, gt_pixels, pred_pixels = counts.diagonal(), counts.sum(dim=1), counts.sum(dim=0)
    union = gt_pixels + pred_pixels - true_positive
    evaluated = union > 0  # present in the ground truth or in the predictions of the whole set
    in_ground_truth = gt_pixels > 0
    iou, accuracy = true_positive / union, true_positive / gt_pixels  # 0 / 0 = nan where undefined
    total = gt_pixels.sum()  # 0: fwIoU and pAcc are nan
    excluded = torch.nonzero(~evaluated).flatten().tolist()
    results: dict[str, Any] = {
        "mIoU": _mean_over(iou, evaluated),
        "fwIoU": float((iou * gt_pixels)[in_ground_truth].sum() / total) * 100.0,
        "mAcc": _mean_over(accuracy, in_ground_truth),
        "pAcc": float(true_positive.sum() / total) * 100.0,
        "per_class_iou": (iou * 100.0).tolist(),
        "per_class_accuracy": (accuracy * 100.0).tolist(),
        "num_classes": num_classes,
        "num_evaluated_classes": int(evaluated.sum()),
        "num_excluded_classes": len(excluded),
        "excluded_classes": excluded,
    }
    if class_names is not None:
        results["excluded_class_names"] = [class_names[i] for i in excluded]
    if unseen_classes is not None:
        unseen_ids = unseen_class_ids(unseen_classes, class_names, num_classes)
        unseen = torch.zeros(num_classes, dtype=torch.bool)
        unseen[unseen_ids] = True
        seen_miou, unseen_miou = _mean_over(iou, evaluated & ~unseen), _mean_over(iou, evaluated & unseen)
        results.update(
            mIoU_seen=seen_miou,
            mIoU_unseen=unseen_miou,
            hIoU=harmonic_mean(seen_miou, unseen_miou),
            num_evaluated_seen_classes=int((evaluated & ~unseen).sum()),
            num_evaluated_unseen_classes=int((evaluated & unseen).sum()),
            unseen_classes=unseen_ids,
        )
    return results


def load_metric(**kwargs: Any):
    """The `mean_iou_maft` metric as an `evaluate.EvaluationModule`, loaded offline from this package (which must be
    installed). Keyword arguments go to `evaluate.load`."""
    import evaluate  # pulls in `datasets`

    return evaluate.load(os.fspath(METRIC_PATH), **kwargs)
