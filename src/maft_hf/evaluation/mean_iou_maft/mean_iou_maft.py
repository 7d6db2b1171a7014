"""`mean_iou_maft`: MAFT benchmark scores (mIoU, fwIoU, mAcc, pAcc, seen / unseen mIoU, hIoU) as an `evaluate` metric.

Shipped inside the `maft_hf` package so that it loads with the network off:
`evaluate.load("<site-packages>/maft_hf/evaluation/mean_iou_maft")`, or `maft_hf.evaluation.metrics.load_metric()`. `evaluate`
copies this file to its modules cache and imports it on its own, so everything it needs is imported absolutely from
the installed `maft_hf` package; the computation is `maft_hf.evaluation.metrics` (exact int64 confusion matrix, detectron2 v0.6
conventions, results in percent).
"""

import datasets
import evaluate
import numpy as np

from maft_hf.evaluation.metrics import ConfusionMatrix, compute_segmentation_metrics

_DESCRIPTION = """
Semantic-segmentation scores with the conventions of detectron2 v0.6 `SemSegEvaluator`, the evaluator of the released
MAFT code: one confusion matrix over the whole set; pixels whose reference is `ignore_index` are skipped; classes
absent from both references and predictions of the whole set are excluded from every mean (reported in
`excluded_classes`); IoUs and accuracies in percent. With `unseen_classes`, also the mIoU of the seen and of the unseen
classes and their harmonic mean (hIoU).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2D integer arrays): predicted class ids, one `(H, W)` map per image.
    references (`list` of 2D integer arrays): ground-truth class ids, same shapes; `ignore_index` marks pixels to skip.
    num_labels (`int`): number of classes `C` (ids `0 .. C-1`).
    ignore_index (`int`): reference value to skip (255, or 65535 for ADE20K-847 and PASCAL-Context-459).
    unseen_classes (`list[int]` or `list[str]`, *optional*): unseen classes of a zero-shot split (names need
        `class_names`).
    class_names (`list[str]`, *optional*): the `C` class names.
Returns:
    `dict`: `mIoU`, `fwIoU`, `mAcc`, `pAcc`, `per_class_iou`, `per_class_accuracy`, `num_evaluated_classes`,
    `num_excluded_classes`, `excluded_classes` (+ `mIoU_seen`, `mIoU_unseen`, `hIoU` with `unseen_classes`), in percent.
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoUMAFT(evaluate.Metric):
    """`evaluate` wrapper of `maft_hf.evaluation.metrics.compute_segmentation_metrics`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": _LIST(_LIST(datasets.Value("uint16"))),
                    "references": _LIST(_LIST(datasets.Value("uint16"))),
                }
            ),
            reference_urls=["https://github.com/jiaosiyu1999/MAFT"],
        )

    def _compute(self, predictions, references, num_labels, ignore_index, unseen_classes=None, class_names=None):
        confusion = ConfusionMatrix(int(num_labels), ignore_index=ignore_index)
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions for {len(references)} references.")
        for prediction, reference in zip(predictions, references):
            confusion.update(np.asarray(prediction), np.asarray(reference))
        return compute_segmentation_metrics(confusion, class_names=class_names, unseen_classes=unseen_classes)
