"""From proposals and class scores to a semantic map (DESIGN.md section 1; paper Eq. 1 and 9).

* [`classify_proposals`]: `exp(logit_scale) * cos(mask embedding, text embedding)`, `(B, N, C)`.
* [`semantic_scores`]: `S[c, h, w] = sum_n A[n, c] * M[n, h, w]` with `A = softmax(logits)` over the `C` classes
  (the MaskFormer rule of the released code), computed in class and proposal chunks.
* [`semantic_map`]: `argmax_c S[c, h, w]` without ever holding the full `(C, H, W)` tensor: pixel blocks, each with
  a running max / argmax over class chunks, so 847 classes x 300 proposals at 640x640 need about 0.1 GB on top of
  the inputs instead of 1.3 GB (`scripts/benchmark_inference_memory.py`).
* [`ensemble_class_scores`] and [`match_generator_scores`]: the optional geometric ensemble of paper Eq. 9 with a
  proposal generator's own class scores (the released inference uses none: ensemble weight 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_ENSEMBLE_WEIGHT = 0.7  # lambda of paper Eq. 9 (the paper reports 0.6-0.8); the release uses no ensemble

# Default size, in elements, of one class chunk of scores `(chunk_classes, H * W)` (64 MB in float32).
DEFAULT_CHUNK_ELEMENTS = 2**24


def _check_scores_and_masks(class_scores: torch.Tensor, masks: torch.Tensor) -> None:
    if not isinstance(class_scores, torch.Tensor) or class_scores.ndim != 2:
        got = tuple(class_scores.shape) if isinstance(class_scores, torch.Tensor) else type(class_scores).__name__
        raise ValueError(f"class scores must be a (N, C) tensor, got {got}.")
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3:
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"masks must be a (N, H, W) tensor, got {got}.")
    if masks.shape[0] == 0 or class_scores.shape[0] == 0:
        raise ValueError(
            f"Got zero proposals (class scores {tuple(class_scores.shape)}, masks {tuple(masks.shape)}); "
            "at least one proposal is required."
        )
    if class_scores.shape[0] != masks.shape[0]:
        raise ValueError(
            f"class scores and masks must have the same number of proposals N: class scores "
            f"{tuple(class_scores.shape)} (N={class_scores.shape[0]}), masks {tuple(masks.shape)} (N={masks.shape[0]})."
        )
    if class_scores.shape[1] == 0:
        raise ValueError(f"class scores have C = 0 classes, shape {tuple(class_scores.shape)}; expected C >= 1.")
    if masks.shape[1] == 0 or masks.shape[2] == 0:
        raise ValueError(f"masks have an empty spatial size {tuple(masks.shape[1:])}.")


def _prepare(class_scores, masks, from_logits, chunk_classes, chunk_proposals):
    _check_scores_and_masks(class_scores, masks)
    num_proposals, num_classes = class_scores.shape
    pixels = masks.shape[1] * masks.shape[2]
    scores = class_scores.to(device=masks.device, dtype=torch.float32)
    probs = scores.softmax(dim=-1) if from_logits else scores
    if chunk_classes is None:
        chunk_classes = max(1, DEFAULT_CHUNK_ELEMENTS // pixels)
    if chunk_proposals is None:
        chunk_proposals = num_proposals
    if chunk_classes < 1 or chunk_proposals < 1:
        raise ValueError(
            f"chunk sizes must be >= 1, got chunk_classes={chunk_classes}, chunk_proposals={chunk_proposals}."
        )
    flat_masks = masks.reshape(num_proposals, pixels)
    if chunk_proposals >= num_proposals and flat_masks.dtype != torch.float32:
        flat_masks = flat_masks.to(torch.float32)  # one conversion, reused by every class chunk
    # (N, C) -> (C, N), so that a class chunk times the masks is one matrix product.
    return probs.t().contiguous(), flat_masks, min(chunk_classes, num_classes), min(chunk_proposals, num_proposals)


def _class_chunk_scores(probs_t, flat_masks, start, stop, chunk_proposals, out=None) -> torch.Tensor:
    """`(stop - start, H * W)` = `probs_t[start:stop] @ flat_masks`, accumulated over proposal chunks in place."""
    num_proposals = flat_masks.shape[0]
    if out is None:
        out = flat_masks.new_zeros((stop - start, flat_masks.shape[1]), dtype=torch.float32)
    else:
        out.zero_()
    for first in range(0, num_proposals, chunk_proposals):
        last = min(first + chunk_proposals, num_proposals)
        out.addmm_(probs_t[start:stop, first:last], flat_masks[first:last].to(torch.float32))
    return out


def semantic_scores(
    class_scores: torch.Tensor,
    masks: torch.Tensor,
    from_logits: bool = True,
    chunk_classes: int | None = None,
    chunk_proposals: int | None = None,
) -> torch.Tensor:
    """Per-pixel class scores `S[c, h, w] = sum_n A[n, c] * M[n, h, w]` (the MaskFormer semantic inference rule).

    Args:
        class_scores: `(N, C)`: logits (`from_logits=True`, softmax over `C` is applied: `A = softmax(logits)`) or
            already probabilities / ensembled scores (`from_logits=False`, used as `A` unchanged).
        masks: `(N, H, W)` proposal probabilities in [0, 1] (float, half or bool), one image.
        from_logits: whether `class_scores` are logits.
        chunk_classes: classes per chunk; default: as many as fit `2**24` elements of `(chunk, H * W)`.
        chunk_proposals: proposals per chunk (masks are converted to float32 one chunk at a time); default all.

    Returns:
        `(C, H, W)` float32 on `masks.device`. Chunking changes only the summation order (float rounding).

    Example:

    ```python
    >>> import torch
    >>> from maft_hf.inference.semantic_map import semantic_scores
    >>> logits, masks = torch.randn(3, 2), torch.rand(3, 4, 4)
    >>> semantic_scores(logits, masks).shape
    torch.Size([2, 4, 4])
    ```"""
    probs_t, flat_masks, chunk_classes, chunk_proposals = _prepare(
        class_scores, masks, from_logits, chunk_classes, chunk_proposals
    )
    num_classes = probs_t.shape[0]
    out = flat_masks.new_empty((num_classes, flat_masks.shape[1]), dtype=torch.float32)
    for start in range(0, num_classes, chunk_classes):
        stop = min(start + chunk_classes, num_classes)
        _class_chunk_scores(probs_t, flat_masks, start, stop, chunk_proposals, out=out[start:stop])
    return out.reshape(num_classes, *masks.shape[1:])


def semantic_map(
    class_scores: torch.Tensor,
    masks: torch.Tensor,
    from_logits: bool = True,
    chunk_classes: int | None = None,
    chunk_proposals: int | None = None,
    chunk_pixels: int | None = None,
) -> torch.Tensor:
    """`argmax_c` of [`semantic_scores`], `(H, W)` int64, without materialising the `(C, H, W)` scores.

    Works on blocks of `chunk_pixels` pixels: for each block it computes the `(pixels, classes)` scores one class
    chunk at a time (`masks_block^T @ A[:, chunk]`, summed over proposal chunks) and keeps a running maximum and its
    class index over the class chunks. Peak extra memory is one `(chunk_pixels, chunk_classes)` float32 buffer plus
    the `(H * W)` result; the masks are converted to float32 one pixel block at a time. Ties go to the lowest class
    index, as with `torch.argmax` over the full tensor.

    Args:
        class_scores, masks, from_logits: as [`semantic_scores`].
        chunk_classes: classes per chunk; default all `C` (one matrix product per pixel block).
        chunk_proposals: proposals per chunk; default all.
        chunk_pixels: pixels per block; default `2**24 // chunk_classes` (a 64 MB buffer).

    Returns:
        `(H, W)` `torch.LongTensor` of class ids in `[0, C)` on `masks.device`.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf.inference.semantic_map import semantic_map
    >>> semantic_map(torch.randn(300, 847), torch.rand(300, 64, 64)).shape
    torch.Size([64, 64])
    ```"""
    _check_scores_and_masks(class_scores, masks)
    num_proposals, num_classes = class_scores.shape
    pixels = masks.shape[1] * masks.shape[2]
    scores = class_scores.to(device=masks.device, dtype=torch.float32)
    probs = scores.softmax(dim=-1) if from_logits else scores
    chunk_classes = num_classes if chunk_classes is None else chunk_classes
    chunk_proposals = num_proposals if chunk_proposals is None else chunk_proposals
    if min(chunk_classes, chunk_proposals, 1 if chunk_pixels is None else chunk_pixels) < 1:
        raise ValueError(
            f"chunk sizes must be >= 1, got chunk_classes={chunk_classes}, chunk_proposals={chunk_proposals}, "
            f"chunk_pixels={chunk_pixels}."
        )
    if chunk_pixels is None:
        chunk_pixels = max(1, DEFAULT_CHUNK_ELEMENTS // min(chunk_classes, num_classes))
    chunk_classes, chunk_pixels = min(chunk_classes, num_classes), min(chunk_pixels, pixels)
    flat_masks = masks.reshape(num_proposals, pixels)
    result = torch.empty(pixels, dtype=torch.long, device=masks.device)
    buffer = probs.new_empty((chunk_pixels, chunk_classes))
    for first_pixel in range(0, pixels, chunk_pixels):
        last_pixel = min(first_pixel + chunk_pixels, pixels)
        block = flat_masks[:, first_pixel:last_pixel].to(torch.float32).t()  # (P, N)
        best_value = best_index = None
        for start in range(0, num_classes, chunk_classes):
            stop = min(start + chunk_classes, num_classes)
            chunk = buffer[: block.shape[0], : stop - start].zero_()
            for first in range(0, num_proposals, chunk_proposals):
                last = min(first + chunk_proposals, num_proposals)
                chunk.addmm_(block[:, first:last], probs[first:last, start:stop])
            value, index = chunk.max(dim=1)
            if best_value is None:
                best_value, best_index = value, index
            else:
                better = value > best_value  # strict: an earlier (lower) class keeps a tie
                best_value = torch.where(better, value, best_value)
                best_index = torch.where(better, index + start, best_index)
        result[first_pixel:last_pixel] = best_index
    return result.reshape(masks.shape[1:])


def ensemble_class_scores(
    clip_probs: torch.Tensor,
    generator_probs: torch.Tensor | None,
    seen: torch.Tensor | Sequence[bool],
    weight: float = 0.7,
) -> torch.Tensor:
    """Geometric ensemble of paper Eq. 9 between CLIP's and the proposal generator's class probabilities.

    With `lambda = weight`, `A_p = generator_probs`, `A_c = clip_probs` (paper appendix A, Eq. 9):

        A[n, c] = A_p[n, c] ** lambda * A_c[n, c] ** (1 - lambda)   if c is seen (known to the generator)
        A[n, c] = A_c[n, c] ** lambda                                otherwise

    so `lambda` is the exponent of the *generator* on seen classes and of *CLIP* on the others (the paper uses
    0.6-0.8). The result is not renormalised (the paper multiplies it with the masks directly); pass it to
    [`semantic_map`] with `from_logits=False`. Generator entries of unseen classes are ignored.

    Args:
        clip_probs: `(N, C)` softmax probabilities of MAFT over the vocabulary.
        generator_probs: `(N, C)` probabilities of the generator mapped onto the vocabulary (see
            [`match_generator_scores`]), or None: then `clip_probs` is returned unchanged (no ensemble, which is
            the released inference).
        seen: `(C,)` bool, True for classes the generator was trained on.
        weight: `lambda` in [0, 1]; `0` also means no ensemble (taken literally, Eq. 9 with `lambda = 0` would give
            every unseen class a score of 1).

    Returns:
        `(N, C)` float32 ensembled scores.
    """
    if not isinstance(clip_probs, torch.Tensor) or clip_probs.ndim != 2:
        got = tuple(clip_probs.shape) if isinstance(clip_probs, torch.Tensor) else type(clip_probs).__name__
        raise ValueError(f"clip_probs must be a (N, C) tensor, got {got}.")
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"The ensemble weight lambda must be in [0, 1], got {weight}.")
    if generator_probs is None or float(weight) == 0.0:
        return clip_probs  # no ensemble (lambda = 0 would otherwise give every unseen class a score of 1)
    if tuple(generator_probs.shape) != tuple(clip_probs.shape):
        raise ValueError(
            f"generator_probs must have the shape of clip_probs (N, C) = {tuple(clip_probs.shape)}, "
            f"got {tuple(generator_probs.shape)}."
        )
    seen = torch.as_tensor(seen, dtype=torch.bool, device=clip_probs.device)
    if tuple(seen.shape) != (clip_probs.shape[1],):
        raise ValueError(f"seen must be a (C,) = ({clip_probs.shape[1]},) bool tensor, got shape {tuple(seen.shape)}.")
    clip_probs = clip_probs.float()
    generator_probs = generator_probs.to(device=clip_probs.device, dtype=torch.float32)
    seen_scores = generator_probs.pow(weight) * clip_probs.pow(1.0 - weight)
    unseen_scores = clip_probs.pow(weight)
    return torch.where(seen.unsqueeze(0), seen_scores, unseen_scores)


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
    if not isinstance(generator_scores, torch.Tensor) or generator_scores.ndim != 2:
        got = tuple(generator_scores.shape) if isinstance(generator_scores, torch.Tensor) else type(generator_scores)
        raise ValueError(f"generator_scores must be a (N, K) tensor, got {got}.")
    if len(generator_names) != generator_scores.shape[1]:
        raise ValueError(
            f"generator_names must name the K = {generator_scores.shape[1]} columns of generator_scores, "
            f"got {len(generator_names)} names."
        )
    if len(vocabulary) == 0:
        raise ValueError("The vocabulary is empty; at least one class name is required.")
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
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(f"pixel_values must be (B, 3, S, S), got {got}.")
    if not isinstance(proposal_masks, torch.Tensor) or proposal_masks.ndim != 4:
        got = tuple(proposal_masks.shape) if isinstance(proposal_masks, torch.Tensor) else type(proposal_masks).__name__
        raise ValueError(f"proposal_masks must be (B, N, H, W), got {got}.")
    if proposal_masks.shape[0] != pixel_values.shape[0]:
        raise ValueError(
            f"proposal_masks has batch size {proposal_masks.shape[0]} but pixel_values has {pixel_values.shape[0]}."
        )
    if proposal_masks.shape[1] == 0:
        raise ValueError(f"proposal_masks has N = 0 proposals (shape {tuple(proposal_masks.shape)}); need N >= 1.")
    projection_dim = model.config.projection_dim
    if not isinstance(text_classifier, torch.Tensor) or text_classifier.ndim != 2:
        got = tuple(text_classifier.shape) if isinstance(text_classifier, torch.Tensor) else type(text_classifier)
        raise ValueError(f"text_classifier must be (C, projection_dim={projection_dim}), got {got}.")
    if text_classifier.shape[1] != projection_dim or text_classifier.shape[0] == 0:
        raise ValueError(
            f"text_classifier must be (C >= 1, projection_dim={projection_dim}), got {tuple(text_classifier.shape)}."
        )
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
