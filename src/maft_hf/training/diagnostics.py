"""A held-out diagnostic: do proposals with a higher IoU with a ground-truth class get a higher score for it?"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..data.labels import IGNORE_INDEX
from ..data.transforms import CLIP_MEAN, CLIP_STD, to_clip_input
from ..inference.semantic_map import classify_proposals
from .data import LabelConverter, generate_proposals, image_to_tensor, label_to_array, proposals_from_column
from .losses import class_masks_from_labels, mask_aware_loss_sum, soft_iou


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank (float64)."""
    if values.ndim != 1:
        raise ValueError(f"average_ranks expects a 1-D tensor, got shape {tuple(values.shape)}.")
    order = torch.argsort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    group_ranks = counts.cumsum(0).double() - (counts.double() - 1) / 2
    ranks = torch.empty(values.shape[0], dtype=torch.float64, device=values.device)
    ranks[order] = group_ranks[inverse]
    return ranks


def spearman_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (Pearson of the average ranks); NaN when one is constant."""
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman_correlation expects two 1-D tensors of one length, got {x.shape} and {y.shape}.")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.square().sum() * ry.square().sum()).sqrt()
    return float("nan") if denominator == 0 else float((rx * ry).sum() / denominator)


@torch.no_grad()
def rank_correlation_eval(
    model,
    dataset,
    text_classifier: torch.Tensor,
    proposal_generator=None,
    *,
    label_converter: LabelConverter | None = None,
    image_column: str = "image",
    label_column: str = "label",
    proposal_column: str | None = None,
    input_image_size: int | None = None,
    image_mean: Sequence[float] = CLIP_MEAN,
    image_std: Sequence[float] = CLIP_STD,
    max_samples: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    class_names: Sequence[str] | None = None,
) -> dict:
    """How well class scores rank proposals by their IoU with the ground truth, on held-out images at their own size:
    `{"spearman", "mask_aware_loss", "num_rows", "num_images"}` (NaN where nothing counts).

    For every image and class `c` in its label map: Spearman's correlation over the image's proposals between
    `softmax(logits)[:, c]` and the soft IoU with the class map (rows where either is constant are skipped); also the
    mask-aware loss over all (image, class, proposal) entries. Proposals come from `proposal_generator` (given
    `class_names` and `text_classifier` when it needs the vocabulary) or `proposal_column`."""
    if proposal_generator is None and proposal_column is None:
        raise ValueError("rank_correlation_eval needs a proposal_generator or a proposal_column.")
    size = input_image_size or model.config.vision_config.input_image_size
    device = next(model.parameters()).device
    count = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    correlations, loss_sum, loss_count, was_training = [], 0.0, 0, model.training
    model.eval()
    try:
        for index in range(count):
            row = dataset[index]
            image = image_to_tensor(row[image_column])
            label = label_to_array(row[label_column])
            label = label_converter(label) if label_converter is not None else label.astype(np.int64)
            label = torch.from_numpy(label).to(device)[None]
            if proposal_column is not None:
                masks = proposals_from_column(row[proposal_column], tuple(image.shape[-2:]))
            else:
                masks = generate_proposals(proposal_generator, image[None], class_names, text_classifier)[0]
            masks = masks.to(device)[None]
            pixel_values = to_clip_input(image[None].to(device), size, image_mean, image_std)
            logits = classify_proposals(model, pixel_values, masks, text_classifier.to(device)).float()  # (1, N, C)
            total, entries = mask_aware_loss_sum(logits, masks, label, ignore_index)
            loss_sum, loss_count = loss_sum + float(total), loss_count + int(entries)
            class_ids, _, class_masks = class_masks_from_labels(label, text_classifier.shape[0], ignore_index)
            scores, iou = logits[0].softmax(-1).double(), soft_iou(masks, class_masks)[0].double()  # (N, C), (K, N)
            for k, class_id in enumerate(class_ids[0].tolist()):  # one image: every class is valid
                correlations.append(spearman_correlation(scores[:, class_id], iou[k]))
    finally:
        model.train(was_training)
    correlations = [rho for rho in correlations if not math.isnan(rho)]
    return {
        "spearman": float(np.mean(correlations)) if correlations else float("nan"),
        "mask_aware_loss": loss_sum / loss_count if loss_count else float("nan"),
        "num_rows": len(correlations),
        "num_images": count,
    }
