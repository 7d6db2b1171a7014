"""From proposals and class scores to a semantic map (paper Eq. 1 and 9): the MaskFormer rule
`S[c, h, w] = sum_n softmax(logits)[n, c] * M[n, h, w]`, its argmax in bounded memory, and the optional Eq. 9
ensemble with a proposal generator's own scores (docs/inference.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ..model.pipeline_maft import classify_proposals as classify_proposals  # logits of Eq. 1: shared with checkpoints

DEFAULT_ENSEMBLE_WEIGHT = 0.7  # lambda of paper Eq. 9 (the paper reports 0.6-0.8); the release uses no ensemble
ENSEMBLE_FORMULAS = ("paper", "released")
DEFAULT_CHUNK_ELEMENTS = 2**24  # elements of one float32 work buffer (64 MB)


def _probabilities(class_scores: torch.Tensor, masks: torch.Tensor, from_logits: bool) -> torch.Tensor:
    if class_scores.ndim != 2 or masks.ndim != 3 or class_scores.shape[0] != masks.shape[0] or 0 in class_scores.shape:
        raise ValueError(
            f"Expected class scores (N, C) and masks (N, H, W) with the same N >= 1 and C >= 1, got "
            f"{tuple(class_scores.shape)} and {tuple(masks.shape)}."
        )
    scores = class_scores.to(device=masks.device, dtype=torch.float32)
    return scores.softmax(dim=-1) if from_logits else scores


def semantic_scores(
    class_scores: torch.Tensor, masks: torch.Tensor, from_logits: bool = True, chunk_classes: int | None = None
) -> torch.Tensor:
    """Per-pixel class scores `(C, H, W)` float32 of `(N, C)` class scores (logits, or probabilities) and `(N, H, W)`
    masks of one image, `chunk_classes` classes per matrix product."""
    probs_t = _probabilities(class_scores, masks, from_logits).t()
    num_classes, pixels = probs_t.shape[0], masks.shape[1] * masks.shape[2]
    flat = masks.reshape(masks.shape[0], pixels).to(torch.float32)
    chunk = chunk_classes or max(1, DEFAULT_CHUNK_ELEMENTS // max(pixels, 1))
    out = flat.new_empty((num_classes, pixels))
    for start in range(0, num_classes, chunk):
        torch.mm(probs_t[start : start + chunk], flat, out=out[start : start + chunk])
    return out.reshape(num_classes, *masks.shape[1:])


def _bilinear_taps(size_in: int, size_out: int, device) -> tuple[torch.Tensor, ...]:
    """`(i0, i1, w0, w1)` of a 1-D bilinear resize (`align_corners=False`): `out = w0 * in[i0] + w1 * in[i1]`."""
    positions = torch.arange(size_out, device=device, dtype=torch.float64)
    source = ((positions + 0.5) * (size_in / size_out) - 0.5).clamp(min=0)
    i0 = source.floor().long().clamp(max=size_in - 1)
    w1 = (source - i0).float()
    return i0, (i0 + 1).clamp(max=size_in - 1), 1.0 - w1, w1


def _resized_map(probs, masks, output_size, valid_size, unlabeled_id, unlabeled_threshold) -> torch.Tensor:
    """Argmax of the scores of `masks[:, :h, :w]` resized bilinearly to `output_size`, a block of output rows at a
    time."""
    (height, width), (crop_h, crop_w) = output_size, valid_size
    y0, y1, wy0, wy1 = _bilinear_taps(crop_h, height, masks.device)
    x0, x1, wx0, wx1 = _bilinear_taps(crop_w, width, masks.device)
    channels = probs.shape[1] + (unlabeled_id is not None)  # the total mask weight rides along as one more row
    rows_per_block = max(1, DEFAULT_CHUNK_ELEMENTS // (4 * channels * max(width, crop_w)))  # 16 MB blocks
    result = torch.empty((height, width), dtype=torch.long, device=masks.device)
    for top in range(0, height, rows_per_block):
        bottom = min(top + rows_per_block, height)
        first, last = int(y0[top]), int(y1[bottom - 1]) + 1
        block = masks[:, first:last, :crop_w].to(torch.float32)
        scores = torch.einsum("nc,nhw->chw", probs, block)
        if unlabeled_id is not None:
            scores = torch.cat([scores, block.sum(0, keepdim=True)])
        ty0, ty1 = y0[top:bottom] - first, y1[top:bottom] - first
        rows = scores[:, ty0] * wy0[top:bottom, None] + scores[:, ty1] * wy1[top:bottom, None]
        resized = rows[:, :, x0] * wx0 + rows[:, :, x1] * wx1
        labels = resized[: probs.shape[1]].argmax(0)
        if unlabeled_id is not None:
            labels[resized[-1] < unlabeled_threshold] = unlabeled_id
        result[top:bottom] = labels
    return result


def semantic_map(
    class_scores: torch.Tensor,
    masks: torch.Tensor,
    from_logits: bool = True,
    chunk_classes: int | None = None,
    chunk_pixels: int | None = None,
    *,
    output_size: tuple[int, int] | None = None,
    valid_size: tuple[int, int] | None = None,
    unlabeled_id: int | None = None,
    unlabeled_threshold: float = 0.5,
) -> torch.Tensor:
    """`argmax_c S[c, h, w]` of [`semantic_scores`], `(H, W)` int64 on `masks.device`, in bounded memory.

    Masks at the output size: pixel blocks of `chunk_pixels`, each scored `chunk_classes` at a time (ties go to the
    lowest class). Otherwise the scores are cropped to `valid_size` (top-left) and resized bilinearly
    (`align_corners=False`, detectron2's `sem_seg_postprocess`) to `output_size`. With `unlabeled_id`, pixels whose
    total mask weight is below `unlabeled_threshold` get that id; by default uncovered pixels get class 0."""
    probs = _probabilities(class_scores, masks, from_logits)
    mask_size = tuple(masks.shape[1:])
    output_size, valid_size = tuple(output_size or mask_size), tuple(valid_size or mask_size)
    if output_size != mask_size or valid_size != mask_size:
        return _resized_map(probs, masks, output_size, valid_size, unlabeled_id, unlabeled_threshold)
    num_proposals, num_classes = probs.shape
    chunk_classes = min(chunk_classes or num_classes, num_classes)
    chunk_pixels = chunk_pixels or max(1, DEFAULT_CHUNK_ELEMENTS // chunk_classes)
    flat_masks = masks.reshape(num_proposals, -1)
    result = torch.empty(flat_masks.shape[1], dtype=torch.long, device=masks.device)
    for first_pixel in range(0, flat_masks.shape[1], chunk_pixels):
        block = flat_masks[:, first_pixel : first_pixel + chunk_pixels].to(torch.float32).t()  # (P, N)
        best_value, best_index = (block @ probs[:, :chunk_classes]).max(dim=1)
        for start in range(chunk_classes, num_classes, chunk_classes):
            value, index = (block @ probs[:, start : start + chunk_classes]).max(dim=1)
            better = value > best_value  # strict: an earlier (lower) class keeps a tie
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + start, best_index)
        if unlabeled_id is not None:
            best_index[block.sum(1) < unlabeled_threshold] = unlabeled_id
        result[first_pixel : first_pixel + block.shape[0]] = best_index
    return result.reshape(mask_size)


def ensemble_class_scores(
    clip_probs: torch.Tensor,
    generator_probs: torch.Tensor | None,
    seen: torch.Tensor | Sequence[bool] | None = None,
    weight: float = DEFAULT_ENSEMBLE_WEIGHT,
    formula: str = "paper",
    empty: torch.Tensor | None = None,
) -> torch.Tensor:
    """Geometric ensemble of CLIP's (`A_c`) and the generator's (`A_p`) `(N, C)` class probabilities, paper Eq. 9.

    `"paper"`: `A_p ** w * A_c ** (1 - w)` on `seen` classes, `A_c ** w` on the others. `"released"` (the authors'
    code): `A_p ** (1 - w) * A_c ** w` on every class, with `A_c = 1` for `empty` proposals. Not renormalised: pass
    it to [`semantic_map`] with `from_logits=False`."""
    if generator_probs is None or float(weight) == 0.0:
        return clip_probs
    clip_probs, generator_probs = clip_probs.float(), generator_probs.to(clip_probs.device, torch.float32)
    if formula == "released":
        if empty is not None:
            clip_probs = torch.where(empty.to(clip_probs.device)[:, None], torch.ones_like(clip_probs), clip_probs)
        return generator_probs.pow(1.0 - weight) * clip_probs.pow(weight)
    seen = torch.as_tensor(seen, dtype=torch.bool, device=clip_probs.device)
    seen_scores = generator_probs.pow(weight) * clip_probs.pow(1.0 - weight)
    return torch.where(seen[None], seen_scores, clip_probs.pow(weight))


def normalize_class_name(name: str) -> set[str]:
    """Normalised synonyms of a class name: `"Building,  Edifice "` -> `{"building", "edifice"}`."""
    synonyms = (re.sub(r"\s+", " ", part).strip().lower() for part in name.split(","))
    return {s for s in synonyms if s}


def match_generator_scores(
    generator_scores: torch.Tensor, generator_names: Sequence[str], vocabulary: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A generator's `(N, K)` class probabilities on the vocabulary by shared synonym (the max of several, else 0):
    `(probs (N, C) float32, seen (C,) bool)`."""
    synonym_to_columns: dict[str, list[int]] = {}
    for column, name in enumerate(generator_names):
        for synonym in normalize_class_name(name):
            synonym_to_columns.setdefault(synonym, []).append(column)
    scores = generator_scores.float()
    probs = scores.new_zeros((scores.shape[0], len(vocabulary)))
    seen = torch.zeros(len(vocabulary), dtype=torch.bool, device=scores.device)
    for index, name in enumerate(vocabulary):
        columns = sorted({col for s in normalize_class_name(name) for col in synonym_to_columns.get(s, [])})
        if columns:
            probs[:, index] = scores[:, columns].amax(dim=1)
            seen[index] = True
    return probs, seen
