"""Proposal sources: class-agnostic masks for MAFT to classify, one [`Proposals`] per image (see docs/proposals.md)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

FULL_RESOLUTION_PIXELS = 4096 * 4096


def mask_size_for(image_size: tuple[int, int], working_size: tuple[int, int]) -> tuple[int, int]:
    """The size a generator returns its masks at: the image's, or for images over `FULL_RESOLUTION_PIXELS` its own
    working size (with `Proposals.image_size` set), so that memory stays bounded at any image size."""
    height, width = (int(side) for side in image_size)
    return (height, width) if height * width <= FULL_RESOLUTION_PIXELS else tuple(int(s) for s in working_size)


@dataclass
class Proposals:
    """Proposals of one image: `masks (N, h, w)` probabilities in [0, 1], optionally the generator's `class_scores
    (N, K)` over its own `K` classes (no "void") named by `class_names`. With `image_size` `(H, W)` the masks are at a
    working resolution and stand for their bilinear resize to the image (done block by block in `segment`)."""

    masks: torch.Tensor
    class_scores: torch.Tensor | None = None
    class_names: list[str] | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self):
        if not isinstance(self.masks, torch.Tensor) or self.masks.ndim != 3 or len(self.masks) == 0:
            shape = tuple(self.masks.shape) if isinstance(self.masks, torch.Tensor) else type(self.masks)
            raise ValueError(f"Proposals.masks must be a (N, H, W) tensor with N >= 1, got {shape}.")
        if self.class_scores is None:
            return
        scores, names = self.class_scores, self.class_names
        if scores.ndim != 2 or len(scores) != len(self.masks) or names is None or len(names) != scores.shape[1]:
            raise ValueError(
                f"Proposals.class_scores must be (N={len(self.masks)}, K) with class_names naming its K classes, got "
                f"{tuple(scores.shape)} and {None if names is None else len(names)} names."
            )

    @property
    def num_proposals(self) -> int:
        return self.masks.shape[0]


class ProposalGenerator:
    """Base class of proposal sources: `generator(images) -> list[Proposals]`, one per image, masks at its `(H, W)`;
    with `needs_vocabulary = True` (FreeSeg) they also take `class_names=` and `text_classifier=`."""

    needs_vocabulary: bool = False

    def __call__(self, images) -> list[Proposals]:
        raise NotImplementedError


# Lazy exports: the sources below import transformers model code only when first used.
_LAZY_EXPORTS = {
    **dict.fromkeys(["UserMaskProposals", "proposals_from_user_masks", "split_label_map"], ".user_masks"),
    **dict.fromkeys(["GridProposals", "ColorClusterProposals"], ".grid"),
    "UniversalSegmentationProposals": ".universal",
    "SAMProposals": ".sam",
    "load_proposal_generator": ".factory",
    "FreeSegProposals": ".freeseg.generator",
}
__all__ = ["Proposals", "ProposalGenerator", *_LAZY_EXPORTS]


def __getattr__(name):
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_EXPORTS[name], __name__), name)
