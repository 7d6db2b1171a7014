"""The released MAFT training augmentation (detectron2 `MaskFormerSemanticDatasetMapper`) as torch functions on an
image `uint8 (3, H, W)` and a label map `(H, W)`, with an optional seeded `torch.Generator`.

Deliberate differences: the short side defaults to 640 (`RELEASED_SHORT_SIDES` is the released multi-scale choice);
no SSD colour jitter; torch's antialiased bilinear (close to PIL's) and `nearest-exact` labels (PIL's nearest rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..model.images import shortest_edge_size
from ..model.processing_maft import to_clip_input  # noqa: F401  (re-exported)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_PAD_VALUE = 128
LABEL_PAD_VALUE = 255
RELEASED_SHORT_SIDES = (320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960)
RELEASED_MAX_SIZE = 2560


def _check_pair(image: torch.Tensor, label: torch.Tensor | None) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
        raise ValueError(f"image must be a (3, H, W) tensor, got {shape}.")
    if label is None:
        return
    if not isinstance(label, torch.Tensor) or label.ndim != 2:
        shape = tuple(label.shape) if isinstance(label, torch.Tensor) else type(label)
        raise ValueError(f"label must be a (H, W) tensor, got {shape}.")
    if tuple(label.shape) != tuple(image.shape[-2:]):
        raise ValueError(
            f"image and label must have the same size; got image {tuple(image.shape[-2:])} and label "
            f"{tuple(label.shape)}."
        )
    if label.is_floating_point():
        raise ValueError(f"label must hold integer class ids, got dtype {label.dtype}.")


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


def _pick(values: int | Sequence[int], generator: torch.Generator | None) -> int:
    if isinstance(values, int):
        return values
    values = list(values)
    if not values:
        raise ValueError("short_side must be an int or a non-empty sequence of ints.")
    return int(values[torch.randint(len(values), (1,), generator=generator).item()])


def resize_shortest_edge(
    image: torch.Tensor,
    label: torch.Tensor,
    short_side: int | Sequence[int] = 640,
    max_size: int | None = RELEASED_MAX_SIZE,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image (bilinear) and label (nearest) to a short side of `short_side` (or one drawn from a sequence),
    the long side capped at `max_size`."""
    _check_pair(image, label)
    size = shortest_edge_size(image.shape[-2], image.shape[-1], _pick(short_side, generator), max_size)
    return resize_image(image, size), resize_label(label, size)


def random_crop(
    image: torch.Tensor, label: torch.Tensor, crop_size: int = 640, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop of `min(H, crop_size) x min(W, crop_size)` (detectron2's absolute `RandomCrop`)."""
    _check_pair(image, label)
    height, width = label.shape
    crop_h, crop_w = min(height, crop_size), min(width, crop_size)
    top = int(torch.randint(height - crop_h + 1, (1,), generator=generator).item())
    left = int(torch.randint(width - crop_w + 1, (1,), generator=generator).item())
    return image[:, top : top + crop_h, left : left + crop_w], label[top : top + crop_h, left : left + crop_w]


def pad_to_size(image: torch.Tensor, label: torch.Tensor, size: int = 640) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad at the bottom and right to `size x size`: image with 128, label with 255 (the released padding)."""
    _check_pair(image, label)
    height, width = label.shape
    if height > size or width > size:
        raise ValueError(f"Cannot pad a {height}x{width} image to {size}x{size}; crop it first.")
    padding = (0, size - width, 0, size - height)
    return F.pad(image, padding, value=IMAGE_PAD_VALUE), F.pad(label, padding, value=LABEL_PAD_VALUE)


def random_horizontal_flip(
    image: torch.Tensor, label: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip image and label left-right together with probability `p`."""
    _check_pair(image, label)
    if torch.rand((), generator=generator).item() < p:
        return image.flip(-1), label.flip(-1)
    return image, label


def train_transform(
    image: torch.Tensor,
    label: torch.Tensor,
    short_side: int | Sequence[int] = 640,
    crop_size: int = 640,
    max_size: int | None = RELEASED_MAX_SIZE,
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released training augmentation (without colour jitter): resize short side, random crop, random flip, pad
    at the bottom/right to `crop_size` (in this order: padding is never flipped).

    Example:

    ```python
    >>> g = torch.Generator().manual_seed(0)
    >>> image, label = torch.zeros(3, 300, 400, dtype=torch.uint8), torch.zeros(300, 400, dtype=torch.uint8)
    >>> out_image, out_label = train_transform(image, label, short_side=320, crop_size=384, generator=g)
    >>> out_image.shape, out_label.shape
    (torch.Size([3, 384, 384]), torch.Size([384, 384]))
    ```"""
    image, label = resize_shortest_edge(image, label, short_side, max_size, generator)
    image, label = random_crop(image, label, crop_size, generator)
    image, label = random_horizontal_flip(image, label, flip_prob, generator)
    return pad_to_size(image, label, crop_size)
