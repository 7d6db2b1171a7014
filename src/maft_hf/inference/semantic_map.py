"""From proposals and class scores to a semantic map (DESIGN.md section 1; paper Eq. 1 and 9).

* [`classify_proposals`]: `exp(logit_scale) * cos(mask embedding, text embedding)`, `(B, N, C)`.
* [`semantic_scores`]: `S[c, h, w] = sum_n A[n, c] * M[n, h, w]` with `A = softmax(logits)` over the `C` classes
  (the MaskFormer rule of the released code).
* [`semantic_map`]: `argmax_c S[c, h, w]` in bounded memory (pixel or row blocks), at the masks' size or resized
  to the image's (the released `sem_seg_postprocess`), optionally with an id for pixels no proposal covers.
* [`ensemble_class_scores`] and [`match_generator_scores`]: the optional geometric ensemble of paper Eq. 9 with a
  proposal generator's own class scores, by the paper's formula or the released code's (docs/inference.md).

Inputs are validated where they enter (`segment`, the pipeline, `Proposals`); these functions trust their shapes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

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
    """Per-pixel class scores `S[c, h, w] = sum_n A[n, c] * M[n, h, w]` (the MaskFormer semantic inference rule).

    Args:
        class_scores: `(N, C)` logits (`from_logits=True`: `A = softmax(logits)` over `C`) or already probabilities
            / ensembled scores (`from_logits=False`, used as `A`).
        masks: `(N, H, W)` proposal probabilities in [0, 1] (float, half or bool), one image.
        chunk_classes: classes per matrix product; default: as many as fit a `2**24`-element buffer.

    Returns:
        `(C, H, W)` float32 on `masks.device`.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf.inference.semantic_map import semantic_scores
    >>> semantic_scores(torch.randn(3, 2), torch.rand(3, 4, 4)).shape
    torch.Size([2, 4, 4])
    ```"""
    probs_t = _probabilities(class_scores, masks, from_logits).t()
    num_classes, pixels = probs_t.shape[0], masks.shape[1] * masks.shape[2]
    flat = masks.reshape(masks.shape[0], pixels).to(torch.float32)
    chunk = chunk_classes or max(1, DEFAULT_CHUNK_ELEMENTS // max(pixels, 1))
    out = flat.new_empty((num_classes, pixels))
    for start in range(0, num_classes, chunk):
        torch.mm(probs_t[start : start + chunk], flat, out=out[start : start + chunk])
    return out.reshape(num_classes, *masks.shape[1:])


def _bilinear_taps(size_in: int, size_out: int, device) -> tuple[torch.Tensor, ...]:
    """Source indices and weights of a 1-D bilinear resize `size_in -> size_out` (`align_corners=False`):
    `out[i] = w0[i] * in[i0[i]] + w1[i] * in[i1[i]]`."""
    source = ((torch.arange(size_out, device=device, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5).clamp(
        min=0
    )
    i0 = source.floor().long().clamp(max=size_in - 1)
    w1 = (source - i0).float()
    return i0, (i0 + 1).clamp(max=size_in - 1), 1.0 - w1, w1


def _resized_map(probs, masks, output_size, valid_size, unlabeled_id, unlabeled_threshold) -> torch.Tensor:
    """Argmax of the scores of `masks[:, :h, :w]` resized bilinearly to `output_size`, one block of output rows at a
    time: each block computes the scores of the source rows it needs, resizes them, and keeps only the argmax."""
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
    """`argmax_c S[c, h, w]` of [`semantic_scores`], `(H, W)` int64, in bounded memory.

    Masks at the output size (the default): pixel blocks of `chunk_pixels`, each scored one class chunk at a time
    with a running max (ties go to the lowest class, as `torch.argmax`); the masks are converted to float32 one
    block at a time. Masks at another resolution (a working resolution, or the padded canvas of the released path):
    the scores are formed at the masks' resolution, cropped to `valid_size` (the image region, top-left) and resized
    bilinearly (`align_corners=False`, detectron2's `sem_seg_postprocess`) to `output_size`, one block of output
    rows at a time. Since the resize is linear, this is the map of the masks resized to `output_size` (up to float
    rounding). Memory never holds `N x H x W` or `C x H x W` at the output size.

    Args:
        class_scores, masks, from_logits: as [`semantic_scores`].
        chunk_classes / chunk_pixels: classes per chunk (default all) and pixels per block (default `2**24 //
            chunk_classes`) of the same-size path.
        output_size: `(H, W)` of the map; default the masks' size.
        valid_size: `(h, w)` region of the masks that covers the image; default the whole masks.
        unlabeled_id: when set, pixels whose total mask weight `sum_n M[n, h, w]` is below `unlabeled_threshold`
            (no proposal covers them) get this id. Default None: every pixel gets its argmax class, so pixels that no
            proposal covers (all scores 0) get class 0.
        unlabeled_threshold: see `unlabeled_id`.

    Returns:
        `(H, W)` `torch.LongTensor` of class ids in `[0, C)` (or `unlabeled_id`) on `masks.device`.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf.inference.semantic_map import semantic_map
    >>> semantic_map(torch.randn(300, 847), torch.rand(300, 64, 64)).shape
    torch.Size([64, 64])
    >>> semantic_map(torch.randn(300, 847), torch.rand(300, 64, 64), output_size=(500, 375)).shape
    torch.Size([500, 375])
    ```"""
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
        best_value, best_index = None, None
        for start in range(0, num_classes, chunk_classes):
            value, index = (block @ probs[:, start : start + chunk_classes]).max(dim=1)
            if best_value is None:
                best_value, best_index = value, index
            else:
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
    """Geometric ensemble of CLIP's (`A_c`) and the proposal generator's (`A_p`) class probabilities, paper Eq. 9.

    `formula="paper"` (appendix A, Eq. 9; `lambda = weight`, the *generator's* exponent on seen classes):

        A[n, c] = A_p[n, c] ** lambda * A_c[n, c] ** (1 - lambda)   if c is seen (known to the generator)
        A[n, c] = A_c[n, c] ** lambda                                otherwise

    `formula="released"` (the authors' code for datasets without a trainable flag, i.e. all of theirs; `w = weight`,
    *CLIP's* exponent, for every class):

        A[n, c] = A_p[n, c] ** (1 - w) * A_c[n, c] ** w,   with A_c[n, :] = 1 for proposals n that are `empty`

    where the release's `A_p` is a softmax over `K + 1` with the void column dropped afterwards. The result is not
    renormalised; pass it to [`semantic_map`] with `from_logits=False`.

    Args:
        clip_probs: `(N, C)` softmax probabilities of MAFT over the vocabulary.
        generator_probs: `(N, C)` generator probabilities on the vocabulary ([`match_generator_scores`]), or None:
            then `clip_probs` is returned unchanged (no ensemble, the released evaluation).
        seen: `(C,)` bool, classes the generator was trained on (`"paper"` only).
        weight: in [0, 1]; `0` means no ensemble under both formulas (`clip_probs` returned).
        formula: `"paper"` or `"released"`.
        empty: `(N,)` bool, proposals with no mask pixel above 0.5 (`"released"` only; default none).

    Returns:
        `(N, C)` float32 scores.
    """
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
    """The set of normalised synonyms of a class name: split on commas, lower-cased, stripped, inner whitespace
    collapsed; empty parts dropped. `"Building,  Edifice "` -> `{"building", "edifice"}`."""
    synonyms = (re.sub(r"\s+", " ", part).strip().lower() for part in name.split(","))
    return {s for s in synonyms if s}


def match_generator_scores(
    generator_scores: torch.Tensor, generator_names: Sequence[str], vocabulary: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map a proposal generator's class probabilities onto the vocabulary, by class name.

    Vocabulary class `c` matches generator class `k` when they share a synonym after [`normalize_class_name`]
    (`"building, edifice"` matches `"Building"`). A class matching several generator classes takes the largest of
    their probabilities; a class matching none is unseen and gets 0.

    Args:
        generator_scores: `(N, K)` probabilities of the generator over its own `K` classes (no "void").
        generator_names: the `K` names of those classes.
        vocabulary: the `C` class names of the classifier.

    Returns:
        `(probs (N, C) float32, seen (C,) bool)`, ready for [`ensemble_class_scores`].
    """
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


def classify_proposals(
    model,
    pixel_values: torch.Tensor,
    proposal_masks: torch.Tensor,
    text_classifier: torch.Tensor,
    proposal_valid_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class logits of every proposal: `exp(logit_scale) * cos(mask embedding, class embedding)`, paper Eq. 1.

    Args:
        model: a `MaskAwareCLIPModel`.
        pixel_values: `(B, 3, S, S)` normalised images (see `MAFTImageProcessor`).
        proposal_masks: `(B, N, H, W)` proposal probabilities in [0, 1] or bool, any `H, W`.
        text_classifier: `(C, projection_dim)` class embeddings (from [`build_text_classifier`]; normalised here
            again, so unnormalised rows also work).
        proposal_valid_mask: `(B, N)` bool, False for padding (see `pad_proposals`); padded entries get logits too,
            computed as for an empty mask: ignore them.

    Returns:
        `(B, N, C)` float logits; `softmax(-1)` gives `A` of paper Eq. 1. Gradients flow unless the caller
        disables them (wrap in `torch.no_grad()` for inference).
    """
    features = model.get_mask_features(pixel_values, proposal_masks, proposal_valid_mask=proposal_valid_mask)
    mask_embeds = F.normalize(features.pooler_output, dim=-1)
    text_embeds = F.normalize(text_classifier.to(device=mask_embeds.device, dtype=mask_embeds.dtype), dim=-1)
    return model.logit_scale.exp() * mask_embeds @ text_embeds.t()


__all__ = [
    "classify_proposals",
    "ensemble_class_scores",
    "match_generator_scores",
    "normalize_class_name",
    "semantic_map",
    "semantic_scores",
]
