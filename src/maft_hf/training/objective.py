"""The fine-tuning objective: student and teacher passes, the MAFT loss of a batch (Eq. 5-8) and the LR schedule."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import IGNORE_INDEX
from ..inference.semantic_map import classify_proposals
from .losses import mask_aware_loss_sum, self_distillation_loss

LOSS_NORMALIZATIONS = ("global", "per_device")


def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` (eval mode, no gradients): the original CLIP of the self-distillation loss."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def image_class_logits(model, pixel_values: torch.Tensor, text_classifier: torch.Tensor) -> torch.Tensor:
    """Whole-image class logits `(B, C)`: `exp(logit_scale) * cos(image embedding, class embedding)` of
    `pixel_values (B, 3, s, s)` against `text_classifier (C, D)`."""
    features = model.get_image_features(pixel_values)
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    image_embeds = F.normalize(features, dim=-1)
    text_embeds = F.normalize(text_classifier.to(device=image_embeds.device, dtype=image_embeds.dtype), dim=-1)
    return model.logit_scale.exp() * image_embeds @ text_embeds.t()


class MaskAwareStudent(nn.Module):
    """The trained model as one module returning both logits MAFT's loss needs, so that DDP synchronises the
    gradients of both passes; wrap the `MaskAwareCLIPModel` before `accelerator.prepare` (`student.model` is saved)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, proposal_masks, text_classifier, proposal_valid_mask=None, with_image_logits=True):
        """`pixel_values (B, 3, s, s)`, `proposal_masks (B, N, H, W)`, `text_classifier (C, D)` and
        `proposal_valid_mask (B, N)` -> `(mask_logits (B, N, C), image_logits (B, C) or None)`."""
        mask_logits = classify_proposals(self.model, pixel_values, proposal_masks, text_classifier, proposal_valid_mask)
        image_logits = image_class_logits(self.model, pixel_values, text_classifier) if with_image_logits else None
        return mask_logits, image_logits


@dataclass
class TrainingStepOutput:
    """Result of [`training_step`]: `loss` to back-propagate; detached sums and entry counts of both terms over
    this batch (`distillation_sum = L_dis * B * C`, count `B * C`, 0 without distillation)."""

    loss: torch.Tensor
    mask_aware_sum: torch.Tensor
    mask_aware_count: torch.Tensor
    distillation_sum: torch.Tensor
    distillation_count: int = 0

    @property
    def mask_aware_loss(self) -> torch.Tensor:
        return self.mask_aware_sum / self.mask_aware_count.clamp(min=1)

    @property
    def distillation_loss(self) -> torch.Tensor | None:
        return self.distillation_sum / self.distillation_count if self.distillation_count else None


def training_step(
    student,
    teacher,
    batch: dict,
    text_classifier: torch.Tensor,
    distillation_weight: float = 0.1,
    *,
    ignore_index: int = IGNORE_INDEX,
    mask_aware_normalizer: float | torch.Tensor | None = None,
    distillation_normalizer: float | torch.Tensor | None = None,
    loss_scale: float = 1.0,
    autocast=None,
) -> TrainingStepOutput:
    """Forward pass and MAFT loss `loss_scale * (L_ma + lambda * L_dis)` of one `prepare_batch` batch (Eq. 5-8).

    Both terms are this batch's means (the release), or its sums divided by `mask_aware_normalizer` /
    `distillation_normalizer` (entry counts of the global batch), so that summed over micro-batches and processes the
    gradient is the global batch's (with DDP, `loss_scale = num_processes`). `autocast` wraps the teacher's pass."""
    from ..model.modeling_maft import MaskAwareCLIPModel

    if isinstance(student, MaskAwareCLIPModel):
        student = MaskAwareStudent(student)
    with_distillation = distillation_weight != 0
    if with_distillation and teacher is None:
        raise ValueError("A teacher is required when distillation_weight is not 0.")
    normalized = mask_aware_normalizer is not None or distillation_normalizer is not None
    if normalized and (mask_aware_normalizer is None or (with_distillation and distillation_normalizer is None)):
        raise ValueError("Pass both mask_aware_normalizer and distillation_normalizer, or neither.")
    pixels, masks, valid = batch["pixel_values"], batch["proposal_masks"], batch["proposal_valid_mask"]
    mask_logits, student_logits = student(pixels, masks, text_classifier, valid, with_image_logits=with_distillation)
    ma_sum, ma_count = mask_aware_loss_sum(mask_logits.float(), masks, batch["labels"], ignore_index, valid)
    loss = ma_sum / (ma_count.clamp(min=1) if mask_aware_normalizer is None else mask_aware_normalizer)
    dis_sum, dis_count = torch.zeros((), device=mask_logits.device), 0
    if with_distillation:
        with torch.no_grad(), autocast() if autocast is not None else nullcontext():
            teacher_logits = image_class_logits(teacher, pixels, text_classifier)
        dis = self_distillation_loss(student_logits.float(), teacher_logits.float())
        dis_count = student_logits.numel()  # B * C
        dis_sum = dis * dis_count
        if distillation_normalizer is None:
            loss = loss + distillation_weight * dis
        else:
            loss = loss + distillation_weight * dis_sum / distillation_normalizer
    return TrainingStepOutput(loss * loss_scale, ma_sum.detach(), ma_count, dis_sum.detach(), dis_count)


def poly_lr_scheduler(optimizer, num_training_steps: int, power: float = 0.9, num_warmup_steps: int = 0):
    """detectron2's `WarmupPolyLR` (the released schedule, no warmup factor): `lr * (1 - step / T) ** power` after an
    optional linear warmup (`get_polynomial_decay_schedule_with_warmup`, `lr_end=0`); step once per optimizer step."""
    from transformers import get_polynomial_decay_schedule_with_warmup

    if num_training_steps < 1:
        raise ValueError(f"num_training_steps must be >= 1, got {num_training_steps}.")
    return get_polynomial_decay_schedule_with_warmup(
        optimizer, num_warmup_steps, num_training_steps, lr_end=0.0, power=power
    )
