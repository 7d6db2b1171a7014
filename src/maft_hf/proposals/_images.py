"""Small image helpers shared by the proposal sources (private): image conversion, resizing, padding."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_image_list(images) -> list:
    """A single image (PIL, `(H, W, 3)` array, `(3, H, W)` tensor) or a batch tensor `(B, 3, H, W)` -> list of images."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("Expected at least one image, got an empty list.")
        return list(images)
    return [images]


def to_uint8_chw(image) -> torch.Tensor:
    """PIL image, `(H, W, 3)` uint8 array or `(3, H, W)` uint8 tensor -> `(3, H, W)` uint8 CPU tensor (RGB)."""
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.uint8:
        return image.detach().cpu()
    from ..model.processing_maft import load_image

    array = np.asarray(load_image(image))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def image_size(image) -> tuple[int, int]:
    """`(H, W)` of a PIL image, `(H, W, C)` array or `(C, H, W)` tensor."""
    if hasattr(image, "size") and not callable(image.size) and hasattr(image, "mode"):  # PIL
        width, height = image.size
        return height, width
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        return int(image.shape[1]), int(image.shape[2])
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return int(image.shape[0]), int(image.shape[1])
    raise ValueError(
        f"Expected a PIL image, an (H, W, 3) array or a (3, H, W) tensor, got {type(image).__name__} "
        f"with shape {getattr(image, 'shape', None)}."
    )


def shortest_edge_size(height: int, width: int, shortest_edge: int, longest_edge: int | None) -> tuple[int, int]:
    """Output `(h, w)` when the short side goes to `shortest_edge`, the long side capped at `longest_edge`.

    The same rounding as transformers' `get_size_with_aspect_ratio` (used by the Mask2Former/OneFormer processors).
    """
    short, long = min(height, width), max(height, width)
    target = float(shortest_edge)
    if longest_edge is not None and long / short * shortest_edge > longest_edge:
        target = longest_edge * short / long
        rounded = round(target)
    else:
        rounded = shortest_edge
    if short == rounded:
        return height, width
    if width < height:
        return int(target * height / width), rounded
    return rounded, int(target * width / height)


def normalize_and_pad(
    images: Sequence[torch.Tensor],
    image_mean: Sequence[float],
    image_std: Sequence[float],
    rescale_factor: float = 1 / 255,
    size_divisor: int = 0,
    pad_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise `(3, H_i, W_i)` uint8 images and pad them bottom-right with 0 to one batch.

    The padded size is the batch maximum (or `pad_size`), rounded up to a multiple of `size_divisor` when it is > 0.

    Returns:
        `pixel_values (B, 3, Hp, Wp)` float32 and `pixel_mask (B, Hp, Wp)` int64 (1 on image pixels, 0 on padding).
    """
    if pad_size is None:
        pad_h = max(int(image.shape[-2]) for image in images)
        pad_w = max(int(image.shape[-1]) for image in images)
    else:
        pad_h, pad_w = pad_size
    if size_divisor and size_divisor > 0:
        pad_h = int(math.ceil(pad_h / size_divisor) * size_divisor)
        pad_w = int(math.ceil(pad_w / size_divisor) * size_divisor)
    device = images[0].device
    mean = torch.tensor(image_mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32, device=device).view(3, 1, 1)
    pixel_values = torch.zeros(len(images), 3, pad_h, pad_w, dtype=torch.float32, device=device)
    pixel_mask = torch.zeros(len(images), pad_h, pad_w, dtype=torch.long, device=device)
    for index, image in enumerate(images):
        height, width = image.shape[-2:]
        if height > pad_h or width > pad_w:
            raise ValueError(f"Image of size {(height, width)} does not fit the padded size {(pad_h, pad_w)}.")
        pixel_values[index, :, :height, :width] = (image.float() * rescale_factor - mean) / std
        pixel_mask[index, :height, :width] = 1
    return pixel_values, pixel_mask


def valid_size(pixel_mask: torch.Tensor) -> tuple[int, int]:
    """`(h, w)` of the top-left image region of one `(Hp, Wp)` pixel mask."""
    return int(pixel_mask[:, 0].sum()), int(pixel_mask[0, :].sum())
