"""The released training augmentation (detectron2's `ResizeShortestEdge`, absolute `RandomCrop`, `RandomFlip`, then
bottom/right padding to the crop size with 128 / 255), step by step: the reference `maft_hf.training.data`'s
`sample_augmentation` / `apply_augmentation` are tested against (same random draws, in the same order), and the
release's colour jitter with OpenCV's colour conversions (`ColorAugSSD`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from maft_hf.data.transforms import IMAGE_PAD_VALUE, RELEASED_MAX_SIZE, resize_image, resize_label, shortest_edge_size

LABEL_PAD_VALUE = 255


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
    """Resize image (bilinear) and label (nearest) so that the short side is `short_side`.

    Args:
        image: `uint8 (3, H, W)`.
        label: `(H, W)` integer ids.
        short_side: target short side, or a sequence to draw one from uniformly (the released recipe uses
            `RELEASED_SHORT_SIDES`).
        max_size: cap on the long side (2560 as released), None for no cap.
        generator: seeds the draw when `short_side` is a sequence.

    Returns:
        `(image (3, H', W'), label (H', W'))`.
    """
    _check_pair(image, label)
    size = shortest_edge_size(image.shape[-2], image.shape[-1], _pick(short_side, generator), max_size)
    return resize_image(image, size), resize_label(label, size)


def random_crop(
    image: torch.Tensor, label: torch.Tensor, crop_size: int = 640, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop of `min(H, crop_size) x min(W, crop_size)` (detectron2's absolute `RandomCrop`): sides shorter
    than `crop_size` are kept whole. Use [`pad_to_size`] afterwards for a fixed `crop_size x crop_size` output.

    Returns:
        `(image (3, h, w), label (h, w))` with `h = min(H, crop_size)`, `w = min(W, crop_size)`.
    """
    _check_pair(image, label)
    height, width = label.shape
    crop_h, crop_w = min(height, crop_size), min(width, crop_size)
    top = int(torch.randint(height - crop_h + 1, (1,), generator=generator).item())
    left = int(torch.randint(width - crop_w + 1, (1,), generator=generator).item())
    image = image[:, top : top + crop_h, left : left + crop_w]
    label = label[top : top + crop_h, left : left + crop_w]
    return image, label


def pad_to_size(image: torch.Tensor, label: torch.Tensor, size: int = 640) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad at the bottom and right to `size x size`: image with 128, label with 255 (the released padding).

    Raises:
        ValueError: if the input is larger than `size`.
    """
    _check_pair(image, label)
    height, width = label.shape
    if height > size or width > size:
        raise ValueError(f"Cannot pad a {height}x{width} image to {size}x{size}; crop it first.")
    padding = (0, size - width, 0, size - height)
    image = F.pad(image, padding, value=IMAGE_PAD_VALUE)
    label = F.pad(label, padding, value=LABEL_PAD_VALUE)
    return image, label


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
    """The released training augmentation (without colour jitter): resize short side, random crop, random flip,
    then pad at the bottom/right to `crop_size` (in this order, as released: padding is never flipped).

    Args:
        image: `uint8 (3, H, W)`.
        label: `(H, W)` integer ids (255 = ignore).
        short_side: int, or a sequence to sample from (`RELEASED_SHORT_SIDES` for the released multi-scale recipe).
        crop_size: side of the square output (640).
        max_size: cap on the long side after resizing.
        flip_prob: probability of a horizontal flip.
        generator: a seeded `torch.Generator` for reproducible draws.

    Returns:
        `(image uint8 (3, crop_size, crop_size), label (crop_size, crop_size))`; padding is 128 / 255.

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


# ---- The release's colour jitter: detectron2's ColorAugSSDTransform (projects/PointRend), with OpenCV's 8-bit
# ---- BGR <-> HSV conversions written out from its source (color_hsv.simd.hpp), in numpy.


def opencv_bgr2hsv(image):
    """`cv2.cvtColor(image, cv2.COLOR_BGR2HSV)` for uint8 `(H, W, 3)` BGR: `RGB2HSV_b` (integer tables, shift 12)."""
    b, g, r = (image[..., i].astype(np.int64) for i in range(3))
    v, vmin = np.maximum(np.maximum(b, g), r), np.minimum(np.minimum(b, g), r)
    diff = v - vmin
    sdiv = np.array([0] + [round((255 << 12) / (1.0 * i)) for i in range(1, 256)])
    hdiv = np.array([0] + [round((180 << 12) / (6.0 * i)) for i in range(1, 256)])
    vr, vg = np.where(v == r, -1, 0), np.where(v == g, -1, 0)
    s = (diff * sdiv[v] + (1 << 11)) >> 12
    h = (vr & (g - b)) + (~vr & ((vg & (b - r + 2 * diff)) + (~vg & (r - g + 4 * diff))))
    h = (h * hdiv[diff] + (1 << 11)) >> 12
    h += np.where(h < 0, 180, 0)
    return np.stack([h, s, v], -1).astype(np.uint8)


def opencv_hsv2bgr(hsv):
    """`cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)` as its vectorised `HSV2RGB_simd` computes it: float32, `1 - s * h`
    fused (one rounding, as the compiled library), truncated to uint8."""
    f32 = np.float32
    h = hsv[..., 0].astype(f32) * (f32(6.0) / f32(180))
    s, v = (hsv[..., i].astype(f32) * (f32(1.0) / f32(255)) for i in (1, 2))
    pre = np.trunc(h)
    h = h - pre
    tab0, tab1 = v, v * (f32(1) - s)
    tab2 = v * (1 - s.astype(np.float64) * h).astype(f32)
    tab3 = v * (1 - s.astype(np.float64) * (f32(1) - h)).astype(f32)
    sector = pre - f32(6) * np.trunc(pre * (f32(1) / f32(6)))
    b = np.select([sector < 2, sector == 2, sector <= 4], [tab1, tab3, tab0], tab2)
    g = np.select([sector < 1, sector <= 2, sector == 3], [tab3, tab0, tab2], tab1)
    r = np.select([sector < 1, sector == 1, sector <= 3, sector == 4], [tab0, tab2, tab1, tab3], tab0)
    return np.clip(np.trunc(np.stack([b, g, r], -1) * f32(255)), 0, 255).astype(np.uint8)


class ColorAugSSD:
    """`ColorAugSSDTransform(img_format)` with its random draws given: `brightness` (beta) / `contrast` /
    `saturation` (alpha) / `hue` (delta), None where its coin said no, and the order coin `contrast_first`."""

    def __init__(self, img_format, brightness, contrast, saturation, hue, contrast_first):
        self.is_rgb = img_format == "RGB"
        self.draws = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
        self.contrast_first = contrast_first

    def apply_image(self, img):
        if self.is_rgb:
            img = img[:, :, [2, 1, 0]]
        img = self.brightness(img)
        if self.contrast_first:
            img = self.hue(self.saturation(self.contrast(img)))
        else:
            img = self.contrast(self.hue(self.saturation(img)))
        if self.is_rgb:
            img = img[:, :, [2, 1, 0]]
        return img

    def convert(self, img, alpha=1, beta=0):
        img = img.astype(np.float32) * alpha + beta
        img = np.clip(img, 0, 255)
        return img.astype(np.uint8)

    def brightness(self, img):
        return img if self.draws["brightness"] is None else self.convert(img, beta=self.draws["brightness"])

    def contrast(self, img):
        return img if self.draws["contrast"] is None else self.convert(img, alpha=self.draws["contrast"])

    def saturation(self, img):
        if self.draws["saturation"] is None:
            return img
        img = opencv_bgr2hsv(img)
        img[:, :, 1] = self.convert(img[:, :, 1], alpha=self.draws["saturation"])
        return opencv_hsv2bgr(img)

    def hue(self, img):
        if self.draws["hue"] is None:
            return img
        img = opencv_bgr2hsv(img)
        img[:, :, 0] = (img[:, :, 0].astype(int) + self.draws["hue"]) % 180
        return opencv_hsv2bgr(img)
