"""`maft_hf.evaluation.metrics` as an `evaluate` metric, shipped to load offline; `evaluate` imports this file alone."""

import datasets
import evaluate
import numpy as np

from maft_hf.evaluation.metrics import ConfusionMatrix, compute_segmentation_metrics

_DESCRIPTION = """
Semantic-segmentation scores as detectron2 v0.6 `SemSegEvaluator` (the released MAFT evaluator) computes them, in
percent: one confusion matrix over the whole set, `ignore_index` pixels skipped, classes absent from both references
and predictions left out of every mean; with `unseen_classes` also seen / unseen mIoU and their hIoU.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions, references (`list` of `(H, W)` integer arrays): predicted and ground-truth class ids.
    num_labels (`int`): the number of classes `C`; ignore_index (`int`): the reference value to skip (255, or 65535).
    unseen_classes (`list[int]` or `list[str]`, *optional*): unseen classes (names need `class_names`, the C names).
Returns:
    `dict`: `mIoU`, `fwIoU`, `mAcc`, `pAcc`, per-class IoU and accuracy, the excluded classes (+ `mIoU_seen`,
    `mIoU_unseen`, `hIoU`), in percent (`maft_hf.evaluation.metrics.compute_segmentation_metrics`).
Examples:
    >>> import numpy as np
    >>> metric = evaluate.load("path/to/maft_hf/evaluation/mean_iou_maft")
    >>> out = metric.compute(predictions=[np.array([[0, 1], [1, 1]])], references=[np.array([[0, 1], [255, 0]])],
    ...                      num_labels=2, ignore_index=255)
    >>> round(out["mIoU"], 2)
    50.0
"""

_CITATION = """
@inproceedings{jiao2023maft,
  title={Learning Mask-aware CLIP Representations for Zero-Shot Segmentation},
  author={Jiao, Siyu and Wei, Yunchao and Wang, Yaowei and Zhao, Yao and Shi, Humphrey},
  booktitle={Advances in Neural Information Processing Systems},
  year={2023}
}
"""

_LIST = getattr(datasets, "List", None) or datasets.Sequence
_MAPS = _LIST(_LIST(datasets.Value("uint16")))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoUMAFT(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _MAPS, "references": _MAPS}),
            reference_urls=["https://github.com/jiaosiyu1999/MAFT"],
        )

    def _compute(self, predictions, references, num_labels, ignore_index, unseen_classes=None, class_names=None):
        confusion = ConfusionMatrix(int(num_labels), ignore_index=ignore_index)
        for prediction, reference in zip(predictions, references):  # `evaluate` checked that the lengths agree
            confusion.update(np.asarray(prediction), np.asarray(reference))
        return compute_segmentation_metrics(confusion, class_names=class_names, unseen_classes=unseen_classes)
