"""User-given masks as proposals: `(N, H, W)` arrays / tensors (bool, 0/1, 0..255 or float in [0, 1]), lists of `(H, W)`
masks or `(H, W)` integer label maps, resized bilinearly to the image (formats in docs/proposals.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model.images import load_images
from . import ProposalGenerator, Proposals


def _describe(value) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _to_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype in (np.uint16, np.uint32):  # dtypes torch has few operations for
            value = value.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(value))
    if hasattr(value, "mode") and hasattr(value, "getbands"):  # PIL image
        if len(value.getbands()) != 1:
            raise ValueError(f"Expected a single-band PIL mask (mode '1', 'L', 'P' or 'I'), got mode {value.mode!r}.")
        return _to_tensor(np.array(value))
    raise ValueError(f"Expected a numpy array, tensor or PIL image as a mask, got {_describe(value)}.")


def _to_probabilities(masks: torch.Tensor) -> torch.Tensor:
    if masks.dtype == torch.bool:
        return masks.float()
    if masks.is_complex():
        raise ValueError(f"Expected bool, integer or float masks, got dtype {masks.dtype}.")
    low, high = float(masks.min()), float(masks.max())  # NaN if any value is
    if not (low >= 0 and high <= (1 if masks.is_floating_point() else 255)):
        raise ValueError(
            f"Masks must be floats in [0, 1] (no NaN) or integers 0/1 or in 0..255 (e.g. 0/255), got {masks.dtype} "
            f"values in [{low:g}, {high:g}]."
        )
    return masks.float() / (255.0 if high > 1 else 1.0)


def split_label_map(label_map, ignore_index: int | None = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an `(H, W)` integer label map into `masks (N, H, W)` bool and `ids (N,)` int64, one per id present in
    increasing order (`ignore_index` gets none; None keeps every id)."""
    labels = _to_tensor(label_map)
    if labels.ndim != 2 or labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"Expected an integer label map of shape (H, W), got {_describe(labels)}.")
    labels = labels.long()
    ids = torch.unique(labels)
    if ignore_index is not None:
        ids = ids[ids != ignore_index]
    if ids.numel() == 0:
        raise ValueError(f"The label map holds no id other than ignore_index={ignore_index}: no mask.")
    return labels[None] == ids[:, None, None], ids


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of `(N, H, W)` probabilities to `(N, *size)` (`align_corners=False`, antialiased), in [0, 1]."""
    size = tuple(int(side) for side in size)
    if tuple(masks.shape[-2:]) == size:
        return masks
    shrinking = masks.shape[-2] > size[0] or masks.shape[-1] > size[1]
    resized = F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return resized[:, 0].clamp_(0.0, 1.0)


def _proposals_from_list(masks: Sequence, image_size: tuple[int, int] | None) -> Proposals:
    if len(masks) == 0:
        raise ValueError("Expected at least one mask, got an empty list (N = 0).")
    items = []
    for index, mask in enumerate(masks):
        tensor = _to_tensor(mask)
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tensor.shape[0] != 1:
            raise ValueError(f"Mask {index} of the list must be (H, W), got {_describe(tensor)}.")
        items.append(proposals_from_user_masks(tensor, image_size).masks[0])
    sizes = {tuple(item.shape) for item in items}
    if len(sizes) > 1:
        raise ValueError(f"The masks of a list must have one size without image_size, got {sorted(sizes)}.")
    return Proposals(masks=torch.stack(items))


def proposals_from_user_masks(
    masks, image_size: tuple[int, int] | None = None, ignore_index: int | None = 255
) -> Proposals:
    """User masks in any format of the module docstring -> [`Proposals`] (no class scores), resized to `image_size`
    `(H, W)` when given; `ignore_index` applies to label maps. `ValueError` for no mask, NaN or values out of range."""
    if image_size is not None:
        if len(image_size) != 2 or min(int(side) for side in image_size) <= 0:
            raise ValueError(f"image_size must be a positive (H, W), got {image_size}.")
        image_size = (int(image_size[0]), int(image_size[1]))
    if isinstance(masks, (list, tuple)):
        return _proposals_from_list(masks, image_size)
    tensor = _to_tensor(masks)
    if tensor.ndim == 2 and tensor.is_floating_point():
        raise ValueError(
            f"A 2-D mask input must be an integer label map or a bool mask, got {_describe(masks)}; "
            "give one soft mask as (1, H, W) or in a list."
        )
    if tensor.ndim == 2:  # one bool mask, or a label map
        tensor = tensor[None] if tensor.dtype == torch.bool else split_label_map(tensor, ignore_index)[0]
    if tensor.ndim != 3:
        raise ValueError(f"Expected masks of shape (N, H, W), a label map (H, W) or a list, got {_describe(masks)}.")
    if tensor.numel() == 0:
        raise ValueError(
            f"Expected at least one mask of a non-empty size, got shape {tuple(tensor.shape)} (N = {len(tensor)})."
        )
    probabilities = _to_probabilities(tensor)
    return Proposals(masks=probabilities if image_size is None else resize_masks(probabilities, image_size))


class UserMaskProposals(ProposalGenerator):
    """Proposal source returning user masks (one set for every image, or per call), resized to each image."""

    def __init__(self, masks=None, ignore_index: int | None = 255):
        self.masks, self.ignore_index = masks, ignore_index
        if masks is not None:  # validate early
            proposals_from_user_masks(masks, ignore_index=ignore_index)

    def __call__(self, images, masks: Sequence | None = None) -> list[Proposals]:
        """Proposals for each image, from `masks` (one set per image) or the constructor's."""
        images = load_images(images)
        if masks is None:
            if self.masks is None:
                raise ValueError("No masks: pass masks to UserMaskProposals(...) or to the call.")
            masks = [self.masks] * len(images)
        elif len(masks) != len(images):
            raise ValueError(f"Expected one mask set per image ({len(images)}), got {len(masks)}.")
        return [
            proposals_from_user_masks(mask_set, image_size=(image.height, image.width), ignore_index=self.ignore_index)
            for image, mask_set in zip(images, masks)
        ]
