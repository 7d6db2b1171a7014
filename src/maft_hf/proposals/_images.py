"""Loading, normalisation, padding and mask-logit resizing shared by the proposal sources (private)."""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
import transformers

from ..hub.conversion import pretrained_options

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_UPSAMPLE_CHUNK = 16  # masks resized at once: bounds the memory at the padded / output size


def normalize_and_pad(
    images, image_mean, image_std, rescale_factor: float = 1 / 255, size_divisor: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise `(3, H_i, W_i)` uint8 images and zero-pad them bottom-right to the batch maximum, rounded up to a
    multiple of `size_divisor`: `pixel_values (B, 3, Hp, Wp)` float32, `pixel_mask (B, Hp, Wp)` int64."""
    pad_h = max(int(image.shape[-2]) for image in images)
    pad_w = max(int(image.shape[-1]) for image in images)
    if size_divisor and size_divisor > 0:
        pad_h, pad_w = -(-pad_h // size_divisor) * size_divisor, -(-pad_w // size_divisor) * size_divisor
    device = images[0].device
    mean = torch.tensor(image_mean, dtype=torch.float32, device=device).reshape(-1, 1, 1)  # 3 values or 1
    std = torch.tensor(image_std, dtype=torch.float32, device=device).reshape(-1, 1, 1)
    pixel_values = torch.zeros(len(images), 3, pad_h, pad_w, dtype=torch.float32, device=device)
    pixel_mask = torch.zeros(len(images), pad_h, pad_w, dtype=torch.long, device=device)
    for index, image in enumerate(images):
        height, width = image.shape[-2:]
        pixel_values[index, :, :height, :width] = (image.float() * rescale_factor - mean) / std
        pixel_mask[index, :height, :width] = 1
    return pixel_values, pixel_mask


def resize_logits(logits, padded_size, valid_size, output_size, align_corners: bool) -> torch.Tensor:
    """`(N, h, w)` mask logits of one image -> `(N, H, W)` float32 logits at `output_size`: upsampled to the padded
    input (`align_corners` as the model's release does), cropped to `valid_size` (top-left), resized bilinearly."""
    chunks = []
    for start in range(0, logits.shape[0], _UPSAMPLE_CHUNK):
        chunk = logits[None, start : start + _UPSAMPLE_CHUNK].float()
        chunk = F.interpolate(chunk, size=tuple(padded_size), mode="bilinear", align_corners=align_corners)
        chunk = chunk[:, :, : valid_size[0], : valid_size[1]]
        if tuple(chunk.shape[-2:]) != tuple(output_size):
            chunk = F.interpolate(chunk, size=tuple(output_size), mode="bilinear", align_corners=False)
        chunks.append(chunk[0])
    return torch.cat(chunks)


def from_pretrained(loader_name: str, model_or_path, local_files_only: bool | None, optional: bool = False):
    """`transformers.<loader_name>.from_pretrained(model_or_path)` for a path / Hub id, else `model_or_path` itself;
    an `optional` component is None (logged) when the checkpoint has none, or when given a model instance."""
    if not isinstance(model_or_path, (str, os.PathLike)):
        if not optional and not isinstance(model_or_path, torch.nn.Module):
            raise ValueError(f"Expected a checkpoint path, a Hub id or a model, got {type(model_or_path).__name__}.")
        return None if optional else model_or_path
    try:
        loader = getattr(transformers, loader_name)
        return loader.from_pretrained(os.fspath(model_or_path), **pretrained_options(local_files_only))
    except Exception as err:  # a missing optional component must not break the generator
        if not optional:
            raise
        logger.warning("No %s loaded from %s (%s); using the built-in fallback.", loader_name, model_or_path, err)
        return None
