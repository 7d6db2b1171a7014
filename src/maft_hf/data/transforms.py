"""The released MAFT training augmentation (detectron2 `MaskFormerSemanticDatasetMapper`) as torch functions on an
image `uint8 (3, H, W)` and a label map `(H, W)`, with an optional seeded `torch.Generator`.

The released data mapper (detectron2 `MaskFormerSemanticDatasetMapper`) does, per training image:
resize the short side (`ResizeShortestEdge`, long side capped at 2560), random crop 640x640 (smaller sides are kept
whole), SSD colour jitter, random horizontal flip, then pad image and label at the bottom/right to 640x640 with 128
and 255 (`maft_hf.training.data.apply_augmentation`). The model then normalises with the CLIP mean/std and resizes
the 640x640 image to 480x480 bilinearly (`align_corners=False`) without keeping the aspect ratio
([`to_clip_input`]).

Differences: the short side defaults to 640 (`RELEASED_SHORT_SIDES` is the released multi-scale choice); resizing
uses torch's bilinear with antialias (close to PIL's, which detectron2 uses for uint8 images) and `nearest-exact` for
labels (PIL's nearest rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.images import shortest_edge_size  # noqa: F401  (re-exported)
from ..model.processing_maft import to_clip_input  # noqa: F401  (re-exported)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_PAD_VALUE = 128
RELEASED_SHORT_SIDES = (320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960)
RELEASED_MAX_SIZE = 2560


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of a `(3, H, W)` image to `size`; keeps the dtype (uint8 rounded and clamped)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None].float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0]
    if not image.is_floating_point():
        out = out.round().clamp(0, 255)
    return out.to(image.dtype)


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour (`nearest-exact`) resize of a `(H, W)` label map to `size`; keeps the dtype."""
    if tuple(label.shape) == tuple(size):
        return label
    out = F.interpolate(label[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0]
    return out.round().to(label.dtype)
