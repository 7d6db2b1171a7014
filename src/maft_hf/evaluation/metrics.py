"""Semantic-segmentation metrics of the MAFT benchmarks: an exact confusion matrix and the scores derived from it.

[`ConfusionMatrix`] accumulates `(ground truth, prediction)` pixel counts with `torch.bincount` (int64, exact, any
number of images, mergeable across workers and processes). [`compute_segmentation_metrics`] turns it into the numbers
the paper reports, with the conventions of detectron2 v0.6 `SemSegEvaluator` (the version the released MAFT code
installs), which produced every number of paper Tab. 1 and 3:

* pixels whose ground truth is the ignore label are skipped, whatever was predicted there;
* IoU of class `c` = `TP / (GT + PRED - TP)`, summed over the whole evaluation set (not averaged per image);
* a class absent from **both** the ground truth and the predictions of the whole set is excluded from every mean
  (its IoU is `nan`, and the result says how many and which classes were excluded). This matters for A-847 and
  PC-459, where many classes never occur in the validation images. A class that is predicted but absent from the
  ground truth has IoU 0 and counts in the mean (detectron2 v0.6: `sum(iou[gt > 0]) / sum((gt + pred) > 0)`);
* mean class accuracy averages `TP / GT` over the classes present in the ground truth; pixel accuracy is
  `sum(TP) / sum(GT)`; fwIoU weights each present class's IoU by its share of ground-truth pixels;
* zero-shot splits: mIoU over the seen classes, over the unseen classes (same exclusion rule inside each group), and
  their harmonic mean `hIoU = 2 * seen * unseen / (seen + unseen)` (paper section 5.1).

All IoUs and accuracies are returned **in percent** (0-100), as the paper and detectron2 report them.

[`load_metric`] returns the same computation as an `evaluate` metric (`mean_iou_maft`, shipped inside this package so
that it loads without the network).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

METRIC_NAME = "mean_iou_maft"
METRIC_PATH = Path(__file__).resolve().parent / METRIC_NAME


def _as_index_tensor(values: Any, what: str) -> torch.Tensor:
    """Class-id map as an int64 tensor (keeps the device of a tensor input)."""
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "iub":
            raise ValueError(f"{what} must hold integer class ids, got an array of dtype {array.dtype}.")
        tensor = torch.from_numpy(array.astype(np.int64, copy=False))
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise ValueError(f"{what} must hold integer class ids, got a tensor of dtype {tensor.dtype}.")
    return tensor.to(torch.int64)


class ConfusionMatrix:
    """Exact pixel confusion matrix of a semantic-segmentation evaluation.

    `matrix[g, p]` (int64, `(num_classes, num_classes)`) counts the pixels whose ground truth is class `g` and whose
    prediction is class `p`; rows are ground truth, columns are predictions. Pixels whose ground truth equals
    `ignore_index` are not counted.

    Args:
        num_classes (`int`): number of classes `C`; valid class ids are `0 .. C-1`.
        ignore_index (`int` or `None`, defaults to 255): ground-truth value to skip (255 for the 8-bit benchmarks,
            65535 for A-847 and PC-459). `None` skips nothing.
        device (`torch.device` or `str`, defaults to CPU): where the matrix lives (the inputs of [`update`] are moved
            there).

    Example:

    ```python
    >>> import torch
    >>> from maft_hf.evaluation.metrics import ConfusionMatrix
    >>> cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    >>> _ = cm.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]]))
    >>> cm.matrix.tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    >>> round(cm.compute()["mIoU"], 2)
    50.0
    ```
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        num_classes = int(num_classes)
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is a valid class id for num_classes={num_classes}; it must lie outside "
                f"[0, {num_classes})."
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @classmethod
    def from_matrix(cls, matrix: Any, ignore_index: int | None = 255) -> ConfusionMatrix:
        """Wrap an existing `(C, C)` count matrix (rows = ground truth, columns = predictions)."""
        counts = _as_index_tensor(matrix, "matrix")
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"matrix must be square (C, C), got shape {tuple(counts.shape)}.")
        if (counts < 0).any():
            raise ValueError("matrix must hold non-negative pixel counts.")
        out = cls(int(counts.shape[0]), ignore_index=ignore_index, device=counts.device)
        out.matrix = counts.clone()
        return out

    def reset(self) -> None:
        """Set every count back to zero."""
        self.matrix.zero_()

    def _check_ids(self, ids: torch.Tensor, what: str) -> None:
        bad = (ids < 0) | (ids >= self.num_classes)
        if bad.any():
            values = torch.unique(ids[bad]).tolist()
            shown = values[:20] + (["..."] if len(values) > 20 else [])
            raise ValueError(
                f"{what} contain class ids {shown} outside [0, {self.num_classes}) that are not the ignore index "
                f"{self.ignore_index}."
            )

    def update(self, predictions: Any, references: Any) -> ConfusionMatrix:
        """Add the pixels of one image `(H, W)` or of a batch `(B, H, W)`.

        Args:
            predictions: predicted class ids, `(H, W)` or `(B, H, W)`, integers in `[0, C)` (tensor, NumPy array or
                anything `np.asarray` accepts). Values at ignored pixels are not looked at.
            references: ground-truth class ids, same shape, integers in `[0, C)` or `ignore_index`.

        Returns:
            `self`, so that calls chain.

        Raises:
            ValueError: different shapes, not 2 or 3 dimensions, non-integer dtypes, or a reference / prediction id
                outside `[0, C)` (the offending ids are listed).
        """
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
        self._check_ids(refs, "references")
        self._check_ids(preds, "predictions")
        counts = torch.bincount(refs * self.num_classes + preds, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)
        return self

    def _check_compatible(self, other: ConfusionMatrix) -> None:
        if not isinstance(other, ConfusionMatrix):
            raise ValueError(f"can only merge a ConfusionMatrix, got {type(other).__name__}.")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge a matrix of {other.num_classes} classes (ignore {other.ignore_index}) into one of "
                f"{self.num_classes} classes (ignore {self.ignore_index})."
            )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """A new matrix holding the counts of both (e.g. of two data-loader workers or two evaluation shards)."""
        self._check_compatible(other)
        out = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.matrix.device)
        out.matrix = self.matrix + other.matrix.to(self.matrix.device)
        return out

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def __radd__(self, other: Any) -> ConfusionMatrix:
        # Lets `sum(list_of_matrices)` work: sum() starts from the int 0.
        if isinstance(other, int) and other == 0:
            return self.merge(ConfusionMatrix(self.num_classes, self.ignore_index, device=self.matrix.device))
        return self.merge(other)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._check_compatible(other)
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def reduce(self, accelerator: Any) -> ConfusionMatrix:
        """Sum the matrices of all processes of an `accelerate.Accelerator` (a new matrix, on CPU, on every process).

        Every process must call it (it is a collective). The sum is exact (int64). Shard the evaluation set without
        duplicates: an accelerate-prepared data loader with `even_batches=True` (the default) repeats samples to fill
        the last batch, and they would be counted twice; use `Accelerator(even_batches=False)` or split the indices
        yourself (`accelerator.split_between_processes`).
        """
        summed = accelerator.reduce(self.matrix.to(accelerator.device), reduction="sum")
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out.matrix = summed.to(device="cpu", dtype=torch.int64)
        return out

    def compute(
        self, class_names: Sequence[str] | None = None, unseen_classes: Iterable[int | str] | None = None
    ) -> dict[str, Any]:
        """[`compute_segmentation_metrics`] of this matrix."""
        return compute_segmentation_metrics(self, class_names=class_names, unseen_classes=unseen_classes)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )


def _resolve_class_ids(classes: Iterable[int | str], num_classes: int, class_names: Sequence[str] | None) -> list[int]:
    ids = []
    for item in classes:
        if isinstance(item, str):
            if class_names is None:
                raise ValueError(f"unseen class {item!r} is given by name but no class_names were passed.")
            if item not in class_names:
                raise ValueError(f"unseen class {item!r} is not one of the {len(class_names)} class names.")
            ids.append(list(class_names).index(item))
        else:
            index = int(item)
            if not 0 <= index < num_classes:
                raise ValueError(f"unseen class id {index} is outside [0, {num_classes}).")
            ids.append(index)
    return sorted(set(ids))


def _mean_over(values: torch.Tensor, selected: torch.Tensor) -> float:
    if not bool(selected.any()):
        return float("nan")
    return float(values[selected].mean()) * 100.0


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU of paper section 5.1: `2 * seen * unseen / (seen + unseen)`; 0 when both are 0, nan when either is nan."""
    if math.isnan(seen) or math.isnan(unseen):
        return float("nan")
    if seen + unseen == 0:
        return 0.0
    return 2.0 * seen * unseen / (seen + unseen)


def compute_segmentation_metrics(
    confusion: ConfusionMatrix | torch.Tensor | np.ndarray,
    class_names: Sequence[str] | None = None,
    unseen_classes: Iterable[int | str] | None = None,
) -> dict[str, Any]:
    """Scores of a confusion matrix, in percent, with detectron2 v0.6 `SemSegEvaluator` conventions.

    Args:
        confusion: a [`ConfusionMatrix`] or its `(C, C)` counts (rows = ground truth, columns = predictions).
        class_names (`Sequence[str]`, *optional*): the `C` class names; adds `excluded_class_names` and allows
            `unseen_classes` by name.
        unseen_classes (*optional*): ids (or names) of the unseen classes of a zero-shot split, e.g. the 15 of
            COCO-Stuff; all other classes are the seen ones. Adds `mIoU_seen`, `mIoU_unseen` and `hIoU`.

    Returns:
        `dict` with
        - `mIoU`, `fwIoU`, `mAcc`, `pAcc` (`float`, percent; `nan` when nothing was counted);
        - `per_class_iou`, `per_class_accuracy` (`list[float]` of length `C`, percent; `nan` where undefined:
          IoU of a class absent from ground truth and predictions, accuracy of a class absent from ground truth);
        - `num_classes`, `num_evaluated_classes`, `num_excluded_classes` and `excluded_classes` (ids of the classes
          absent from both ground truth and predictions, left out of every mean), `excluded_class_names` if names
          were given;
        - with `unseen_classes`: `mIoU_seen`, `mIoU_unseen`, `hIoU`, `num_evaluated_seen_classes`,
          `num_evaluated_unseen_classes`, `unseen_classes` (sorted ids).

    Example:

    ```python
    >>> import torch
    >>> from maft_hf.evaluation.metrics import compute_segmentation_metrics
    >>> counts = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # class 2 never occurs
    >>> m = compute_segmentation_metrics(counts, unseen_classes=[1])
    >>> round(m["mIoU"], 2), m["excluded_classes"], round(m["hIoU"], 2)
    (70.83, [2], 70.59)
    ```
    """
    if isinstance(confusion, ConfusionMatrix):
        counts = confusion.matrix
    else:
        counts = ConfusionMatrix.from_matrix(confusion).matrix
    num_classes = int(counts.shape[0])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for a confusion matrix of {num_classes} classes.")

    counts = counts.detach().to(device="cpu", dtype=torch.float64)
    true_positive = counts.diagonal()
    gt_pixels = counts.sum(dim=1)
    pred_pixels = counts.sum(dim=0)
    union = gt_pixels + pred_pixels - true_positive

    evaluated = union > 0  # present in the ground truth or in the predictions of the whole set
    in_ground_truth = gt_pixels > 0
    iou = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    iou[evaluated] = true_positive[evaluated] / union[evaluated]
    accuracy = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    accuracy[in_ground_truth] = true_positive[in_ground_truth] / gt_pixels[in_ground_truth]

    total = float(gt_pixels.sum())
    excluded = [int(i) for i in torch.nonzero(~evaluated).flatten()]
    results: dict[str, Any] = {
        "mIoU": _mean_over(iou, evaluated),
        "fwIoU": float((iou[in_ground_truth] * gt_pixels[in_ground_truth]).sum() / total) * 100.0
        if total > 0
        else float("nan"),
        "mAcc": _mean_over(accuracy, in_ground_truth),
        "pAcc": float(true_positive.sum() / total) * 100.0 if total > 0 else float("nan"),
        "per_class_iou": [float(v) * 100.0 for v in iou],
        "per_class_accuracy": [float(v) * 100.0 for v in accuracy],
        "num_classes": num_classes,
        "num_evaluated_classes": int(evaluated.sum()),
        "num_excluded_classes": len(excluded),
        "excluded_classes": excluded,
    }
    if class_names is not None:
        results["excluded_class_names"] = [class_names[i] for i in excluded]

    if unseen_classes is not None:
        unseen_ids = _resolve_class_ids(unseen_classes, num_classes, class_names)
        unseen = torch.zeros(num_classes, dtype=torch.bool)
        unseen[unseen_ids] = True
        seen_miou = _mean_over(iou, evaluated & ~unseen)
        unseen_miou = _mean_over(iou, evaluated & unseen)
        results.update(
            {
                "mIoU_seen": seen_miou,
                "mIoU_unseen": unseen_miou,
                "hIoU": harmonic_mean(seen_miou, unseen_miou),
                "num_evaluated_seen_classes": int((evaluated & ~unseen).sum()),
                "num_evaluated_unseen_classes": int((evaluated & unseen).sum()),
                "unseen_classes": unseen_ids,
            }
        )
    return results


def load_metric(**kwargs: Any):
    """The `mean_iou_maft` metric as an `evaluate.EvaluationModule`, loaded from this package (no network needed).

    `evaluate.load(path)` copies the shipped module file to its modules cache (`HF_MODULES_CACHE`) and imports it; the
    module imports `maft_hf.evaluation.metrics` absolutely, so `maft_hf` must be installed (it is, as a package or editable).
    Keyword arguments go to `evaluate.load` (e.g. `experiment_id`, `keep_in_memory`).

    Example:

    ```python
    >>> import numpy as np
    >>> from maft_hf.evaluation.metrics import load_metric
    >>> metric = load_metric(keep_in_memory=True)
    >>> out = metric.compute(predictions=[np.array([[0, 1]])], references=[np.array([[0, 1]])],
    ...                      num_labels=2, ignore_index=255)
    >>> out["mIoU"]
    100.0
    ```
    """
    import evaluate  # imported here: it pulls in `datasets`, which most users of this module do not need

    return evaluate.load(os.fspath(METRIC_PATH), **kwargs)


__all__ = [
    "METRIC_NAME",
    "METRIC_PATH",
    "ConfusionMatrix",
    "compute_segmentation_metrics",
    "harmonic_mean",
    "load_metric",
]
