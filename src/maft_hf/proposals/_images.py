"""Normalisation and padding shared by the proposal sources (private); images enter through `maft_hf.images`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_and_pad(
    images: Sequence[torch.Tensor],
    image_mean: Sequence[float],
    image_std: Sequence[float],
    rescale_factor: float = 1 / 255,
    size_divisor: int = 0,
    pad_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise `(3, H_i, W_i)` uint8 images and zero-pad them bottom-right to the batch maximum (or `pad_size`),
    rounded up to a multiple of `size_divisor`: `pixel_values (B, 3, Hp, Wp)` float32, `pixel_mask (B, Hp, Wp)` int64."""
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
