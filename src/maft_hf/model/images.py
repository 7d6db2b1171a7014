"""The one way an image enters maft_hf: a path, a `datasets` image cell, a PIL image of any mode, a numpy array
`(H, W[, 1|3|4])` or a tensor `(1|3|4, H, W)` of raw pixels -> RGB uint8 with its EXIF orientation applied; 16-bit
pixels are scaled to 8 bits (rules: docs/inference.md). Beside the processor: it is saved as remote code.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import torch
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL's modes of 16-bit PNG/TIFF pixels


@contextlib.contextmanager
def _opened(source):
    """`Image.open` of a path or a `datasets` image cell, naming the file when it cannot be read."""
    name = source.get("path") if isinstance(source, dict) else os.fspath(source)
    data = source.get("bytes") if isinstance(source, dict) else None
    try:
        with Image.open(io.BytesIO(data) if data else name) as im:
            yield im
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"Cannot read image file {name!r}: {err}") from err


def _channels_last(image) -> np.ndarray:
    """A tensor or array -> `(H, W)` or `(H, W, C)` numpy array (tensors `(C, H, W)` are moved to channels-last)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):  # tensors are channels-first when they can be
            image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}.")
    return image


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.rint(array.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0 or high > 255 or low != low:
        raise ValueError(
            f"Expected raw pixel values (uint8, uint16, or numbers in [0, 1] or [0, 255]), got values in "
            f"[{low:.4g}, {high:.4g}]; pass images before normalisation."
        )
    if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        array = array * 255.0  # float images in [0, 1]
    return np.rint(array).astype(np.uint8)


def load_image(image) -> Image.Image:
    """Any accepted image (module docstring) -> RGB PIL image, 8 bits per channel, EXIF orientation applied."""
    if isinstance(image, (str, os.PathLike, dict)):
        with _opened(image) as opened:
            opened.load()
            image = opened.copy()
    if isinstance(image, Image.Image):
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode in _SIXTEEN_BIT_MODES:
            image = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        image = Image.fromarray(_to_uint8(_channels_last(image)))
    if not isinstance(image, Image.Image):
        raise ValueError(f"Expected a path, PIL image, numpy array or tensor, got {type(image).__name__}.")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image has an empty size {image.size}.")
    return image.convert("RGB") if image.mode != "RGB" else image


def load_images(images) -> list[Image.Image]:
    """One image, a list of images, or a batch (`(B, 3, H, W)` tensor, `(B, H, W, 3)` array) -> list of RGB images."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise ValueError("No images were given; expected at least one image.")
    return [load_image(image) for image in images]


def image_to_tensor(image) -> torch.Tensor:
    """Any accepted image -> `(3, H, W)` uint8 RGB CPU tensor (by [`load_image`])."""
    return torch.from_numpy(np.array(load_image(image))).permute(2, 0, 1).contiguous()


def image_size(image) -> tuple[int, int]:
    """`(H, W)` of any accepted image after [`load_image`]; files are not decoded (only their header is read)."""
    if isinstance(image, (str, os.PathLike, dict)):
        with _opened(image) as opened:
            return image_size(opened)
    if isinstance(image, Image.Image):
        turned = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # quarter turns swap the sides
        return (image.width, image.height) if turned else (image.height, image.width)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return tuple(int(side) for side in _channels_last(image).shape[:2])
    raise ValueError(f"Expected a path, PIL image, numpy array or tensor, got {type(image).__name__}.")


def shortest_edge_size(height: int, width: int, short_side: int, max_size: int | None = 2560) -> tuple[int, int]:
    """Output `(height, width)` of detectron2's `ResizeShortestEdge.get_output_shape`: short side -> `short_side`,
    long side capped at `max_size` (2560 as released), each side rounded as `int(side + 0.5)`."""
    scale = short_side / min(height, width)
    new_h, new_w = (short_side, scale * width) if height < width else (scale * height, short_side)
    if max_size is not None and max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)
