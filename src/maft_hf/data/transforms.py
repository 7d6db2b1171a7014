"""Resizing for the released MAFT training augmentation (detectron2 `MaskFormerSemanticDatasetMapper`, done by
`maft_hf.training.data.apply_augmentation`): short side resize (long side capped at 2560), 640x640 random crop, SSD
colour jitter, horizontal flip, padding to 640x640 with 128 / 255; the model then normalises with the CLIP mean/std
and resizes to 480x480 ([`to_clip_input`]). Differences: the short side defaults to 640 (`RELEASED_SHORT_SIDES` is the
released multi-scale choice); torch's antialiased bilinear (close to PIL's) and `nearest-exact` (PIL's rule) resize."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.images import shortest_edge_size as shortest_edge_size
from ..model.processing_maft import to_clip_input as to_clip_input

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_PAD_VALUE = 128
RELEASED_SHORT_SIDES = (320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960)
RELEASED_MAX_SIZE = 2560


def resize_image(image: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of a `(C, H, W)` image to `size`; keeps the dtype (uint8 rounded and clamped)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None].float(), tuple(size), mode="bilinear", align_corners=False, antialias=antialias)[0]
    return (out if image.is_floating_point() else out.round().clamp(0, 255)).to(image.dtype)


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour (`nearest-exact`) resize of a `(H, W)` label map to `size`; keeps the dtype."""
    if tuple(label.shape) == tuple(size):
        return label
    out = F.interpolate(label[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0]
    return out.round().to(label.dtype)
