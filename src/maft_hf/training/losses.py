"""MAFT's objectives (paper section 4.2) as released: mask-aware loss (Eq. 5-7) and self-distillation loss (Eq. 8),
`L = L_ma + lambda * L_dis` with lambda 0.1 as released (the paper writes 1). Unlike the release, the mask-aware
loss also takes one image, batches without a labelled pixel and padded proposals (`proposal_valid_mask`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IOU_EPS = 1e-7
MINMAX_EPS = 1e-8
RELEASED_DISTILLATION_WEIGHT = 0.1
PAPER_DISTILLATION_WEIGHT = 1.0


def soft_iou(proposals: torch.Tensor, gt_class_masks: torch.Tensor) -> torch.Tensor:
    """Soft IoU `sum(p * g) / (sum(g) + sum(p) - sum(p * g) + 1e-7)` over pixels of every proposal `(B, N, H, W)`
    with every class map `(B, K, H, W)` of the same image -> `(B, K, N)`, in float32 at least."""
    if (
        proposals.ndim != 4
        or gt_class_masks.ndim != 4
        or proposals.shape[0] != gt_class_masks.shape[0]
        or proposals.shape[-2:] != gt_class_masks.shape[-2:]
    ):
        raise ValueError(
            "soft_iou expects proposals (B, N, H, W) and gt_class_masks (B, K, H, W) of one batch and spatial size, "
            f"got shapes {tuple(proposals.shape)} and {tuple(gt_class_masks.shape)}."
        )
    dtype = torch.promote_types(proposals.dtype, torch.float32)
    p = proposals.to(dtype).flatten(2)  # (B, N, HW)
    g = gt_class_masks.to(dtype).flatten(2)  # (B, K, HW)
    intersection = torch.bmm(g, p.transpose(1, 2))  # (B, K, N)
    union = g.sum(-1, keepdim=True) + p.sum(-1).unsqueeze(1) - intersection
    return intersection / (union + IOU_EPS)


def _present_classes(labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """`(B, C)` bool: the classes of each label map `(B, H, W)`, whose ids are checked."""
    bad = labels[(labels != ignore_index) & ((labels < 0) | (labels >= num_classes))]
    if bad.numel():
        ids = sorted(set(bad.unique().tolist()))
        raise ValueError(
            f"labels must hold class ids in [0, {num_classes - 1}] or the ignore index {ignore_index}, "
            f"got ids {ids[:20]}{' ...' if len(ids) > 20 else ''}."
        )
    flat = labels.flatten(1).long()
    bins = torch.where(flat == ignore_index, torch.full_like(flat, num_classes), flat)
    present = torch.zeros(labels.shape[0], num_classes + 1, dtype=torch.bool, device=labels.device)
    return present.scatter_(1, bins, True)[:, :num_classes]


def class_masks_from_labels(
    labels: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classes present in each label map `(B, H, W)`, padded to the largest count `Kmax`: `class_ids (B, Kmax)`
    (increasing, padded with 0), `class_valid (B, Kmax)` and float32 0/1 `class_masks (B, Kmax, H, W)` (zero on
    padding)."""
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape (B, H, W), got {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}.")
    labels = labels.long()
    present = _present_classes(labels, num_classes, ignore_index)  # (B, C)
    num_present = present.sum(1)
    max_k = int(num_present.max().item()) if labels.shape[0] else 0
    # a stable sort puts the present classes first, in increasing id order
    order = torch.sort((~present).to(torch.uint8), dim=1, stable=True).indices[:, :max_k]
    class_valid = torch.arange(max_k, device=labels.device).unsqueeze(0) < num_present.unsqueeze(1)
    class_ids = torch.where(class_valid, order, torch.zeros_like(order))
    class_masks = (labels.unsqueeze(1) == class_ids[:, :, None, None]) & class_valid[:, :, None, None]
    return class_ids, class_valid, class_masks.to(torch.float32)


def min_max_normalize(scores: torch.Tensor, valid: torch.Tensor | None = None, eps: float = MINMAX_EPS) -> torch.Tensor:
    """`(s - min) / (max - min + eps)` over the last dimension, as released (a constant row becomes 0); with `valid`
    `(..., N)` bool, min and max over valid entries only and invalid entries 0."""
    if valid is None:
        low, high = scores.amin(-1, keepdim=True), scores.amax(-1, keepdim=True)
        return (scores - low) / (high - low + eps)
    invalid = ~valid.to(torch.bool).expand_as(scores)
    # rows without a valid entry stay finite (the caller masks them out)
    low = scores.masked_fill(invalid, float("inf")).amin(-1, keepdim=True).nan_to_num(0.0, 0.0, 0.0)
    high = scores.masked_fill(invalid, float("-inf")).amax(-1, keepdim=True).nan_to_num(0.0, 0.0, 0.0)
    return ((scores - low) / (high - low + eps)).masked_fill(invalid, 0.0)


def mask_aware_entry_count(
    labels: torch.Tensor, num_classes: int, proposal_valid_mask: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Number of (image, present class, valid proposal) entries of the mask-aware loss, `sum_b K_b * N_b` (0-d
    int64), from the labels alone: what a loop needs before the forward pass to normalise over a global batch."""
    classes = _present_classes(labels, num_classes, ignore_index).sum(1).to(proposal_valid_mask.device)
    return (classes * proposal_valid_mask.sum(1)).sum()


def mask_aware_loss_sum(
    mask_logits: torch.Tensor,
    proposals: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    proposal_valid_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[`mask_aware_loss`] as `(sum, count)` over its entries: `count` 0-d int64, `sum` connected to `mask_logits`
    even when 0."""
    if (
        (mask_logits.ndim, proposals.ndim, labels.ndim) != (3, 4, 3)
        or proposals.shape[:2] != mask_logits.shape[:2]
        or labels.shape[0] != mask_logits.shape[0]
    ):
        raise ValueError(
            f"mask_logits (B, N, C), proposals (B, N, H, W) and labels (B, H', W') must agree, got "
            f"{tuple(mask_logits.shape)}, {tuple(proposals.shape)} and {tuple(labels.shape)}."
        )
    batch, num_proposals, num_classes = mask_logits.shape
    valid = None if proposal_valid_mask is None else proposal_valid_mask.to(torch.bool)
    if valid is not None and tuple(valid.shape) != (batch, num_proposals):
        raise ValueError(
            f"proposal_valid_mask must have shape (B, N) = {(batch, num_proposals)}, got {tuple(valid.shape)}."
        )
    class_ids, class_valid, class_masks = class_masks_from_labels(labels, num_classes, ignore_index)
    if class_ids.shape[1] == 0:  # no labelled pixel: a 0 in the graph of `mask_logits`, so that backward() runs
        return mask_logits.sum() * 0.0, torch.zeros((), dtype=torch.long, device=mask_logits.device)

    with torch.no_grad():
        probs = proposals.detach().to(torch.promote_types(proposals.dtype, torch.float32))
        if probs.shape[-2:] != labels.shape[-2:]:
            probs = F.interpolate(probs, size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=False)
        iou = soft_iou(probs, class_masks.to(probs.device))  # (B, K, N)
        target = min_max_normalize(iou, None if valid is None else valid[:, None, :])

    scores = mask_logits.softmax(dim=-1)  # (B, N, C)
    index = class_ids.to(scores.device).unsqueeze(1).expand(-1, num_proposals, -1)  # (B, N, K)
    selected = scores.gather(-1, index).transpose(1, 2)  # (B, K, N)
    entry_valid = class_valid.to(scores.device).unsqueeze(-1).expand(-1, -1, num_proposals)
    if valid is not None:
        entry_valid = entry_valid & valid.to(scores.device).unsqueeze(1)
    per_entry = F.smooth_l1_loss(selected, target.to(selected), reduction="none", beta=1.0)
    return per_entry.masked_select(entry_valid).sum(), entry_valid.sum()


def mask_aware_loss(
    mask_logits: torch.Tensor,
    proposals: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    proposal_valid_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mask-aware loss `L_ma` (paper Eq. 5-7, as released): for every image `b` and class `c` of `labels[b] (H', W')`,
    SmoothL1 (beta 1) between `softmax(mask_logits[b, n])[c]` (`(B, N, C)`) and the soft IoU of proposal `n`
    (`(B, N, H, W)`, resized bilinearly to the label size) with `labels[b] == c`, min-max normalised over the valid
    proposals (`proposal_valid_mask (B, N)`) and detached; the mean over entries (0 when no pixel is labelled).

    Example: `mask_aware_loss(torch.randn(2, 5, 3), torch.rand(2, 5, 8, 8), torch.randint(0, 3, (2, 8, 8)))`."""
    total, count = mask_aware_loss_sum(mask_logits, proposals, labels, ignore_index, proposal_valid_mask)
    return total / count.clamp(min=1)


def self_distillation_loss(student_image_logits: torch.Tensor, teacher_image_logits: torch.Tensor) -> torch.Tensor:
    """Self-distillation loss `L_dis` (paper Eq. 8, as released): SmoothL1 (beta 1, mean over the `B * C` entries)
    between `softmax(student)` and `softmax(teacher)` of the whole-image logits `(B, C)`; the teacher is detached."""
    if student_image_logits.ndim != 2 or student_image_logits.shape != teacher_image_logits.shape:
        raise ValueError(
            "student_image_logits and teacher_image_logits must both have shape (B, C), got "
            f"{tuple(student_image_logits.shape)} and {tuple(teacher_image_logits.shape)}."
        )
    student = student_image_logits.softmax(dim=-1)
    teacher = teacher_image_logits.detach().softmax(dim=-1).to(student)
    return F.smooth_l1_loss(student, teacher, beta=1.0)


@dataclass
class MAFTLossOutput:
    """`loss = L_ma + lambda * L_dis` and its terms (`distillation_loss` unweighted, None without image logits);
    `L_ma` also as the sum and count of [`mask_aware_loss_sum`]."""

    loss: torch.Tensor
    mask_aware_loss: torch.Tensor
    distillation_loss: torch.Tensor | None
    distillation_weight: float
    mask_aware_sum: torch.Tensor | None = None
    mask_aware_count: torch.Tensor | None = None


def maft_loss(
    mask_logits: torch.Tensor,
    proposals: torch.Tensor,
    labels: torch.Tensor,
    student_image_logits: torch.Tensor | None = None,
    teacher_image_logits: torch.Tensor | None = None,
    distillation_weight: float = RELEASED_DISTILLATION_WEIGHT,
    ignore_index: int = 255,
    proposal_valid_mask: torch.Tensor | None = None,
) -> MAFTLossOutput:
    """Total MAFT loss `L = L_ma + lambda * L_dis` ([`mask_aware_loss`], [`self_distillation_loss`]; lambda is the
    released `MODEL.dis_weight`); without image logits the distillation term is skipped."""
    if (student_image_logits is None) != (teacher_image_logits is None):
        raise ValueError("Pass both student_image_logits and teacher_image_logits, or neither.")
    ma_sum, ma_count = mask_aware_loss_sum(mask_logits, proposals, labels, ignore_index, proposal_valid_mask)
    ma = ma_sum / ma_count.clamp(min=1)
    dis = None if student_image_logits is None else self_distillation_loss(student_image_logits, teacher_image_logits)
    total = ma if dis is None else ma + distillation_weight * dis
    return MAFTLossOutput(total, ma, dis, distillation_weight, ma_sum, ma_count)
