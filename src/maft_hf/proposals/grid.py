"""Weight-free proposal sources for offline demos and smoke tests: the image tiled into k x k soft blocks, or soft
colour clusters (k-means on colour and position of a downsampled copy of the image)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.images import image_to_tensor, load_images
from . import ProposalGenerator, Proposals


def _soft_intervals(k: int, size: int) -> torch.Tensor:
    """`(k, size)` soft indicators `clamp(0.5 + 2 k d, 0, 1)` of the `k` equal intervals of one axis at the pixel
    centres, `d` the signed distance (positive inside) to the interval's inner borders (not the image border)."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    starts = torch.arange(k, dtype=torch.float32)[:, None] / k
    to_start = torch.where(starts > 0, centres - starts, torch.inf)
    to_end = torch.where(starts + 1 / k < 1, starts + 1 / k - centres, torch.inf)
    return (0.5 + 2 * k * torch.minimum(to_start, to_end)).clamp(0.0, 1.0)


def grid_masks(k: int, height: int, width: int) -> torch.Tensor:
    """`(k*k, height, width)` soft block masks, row-major: mask `i * k + j` is `min(row_i(y), col_j(x))`, 1 from a
    quarter block inside, 0.5 on the border, 0 from a quarter block outside; every pixel is `> 0.5` in its block."""
    rows, cols = _soft_intervals(k, height), _soft_intervals(k, width)
    return torch.minimum(rows[:, None, :, None], cols[None, :, None, :]).reshape(k * k, height, width)


def color_cluster_masks(
    image: torch.Tensor, k: int, iterations=10, spatial_weight=0.5, temperature=0.05, work_size=64, seed=0
) -> torch.Tensor:
    """`(k, H, W)` soft cluster masks of a `(3, H, W)` uint8 image: k-means on `(r, g, b, w * y, w * x)` of at most
    `work_size` pixels a side, then the softmax of `-distance / temperature`, resized bilinearly to `(H, W)`."""
    height, width = image.shape[-2:]
    scale = min(1.0, work_size / max(height, width))
    small_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(image[None].float() / 255.0, size=small_size, mode="bilinear", align_corners=False)[0]
    ys, xs = torch.meshgrid(torch.linspace(0, 1, small_size[0]), torch.linspace(0, 1, small_size[1]), indexing="ij")
    features = torch.cat([small, spatial_weight * ys[None], spatial_weight * xs[None]]).reshape(5, -1).t()
    picks = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed))
    centres = features[picks.repeat(k // len(picks) + 1)[:k]]  # repeated if there are fewer pixels than clusters
    for _ in range(iterations):
        assign = torch.cdist(features, centres).argmin(1)
        for c in range(k):
            members = features[assign == c]
            if len(members):
                centres[c] = members.mean(0)
    soft = (-torch.cdist(features, centres) / temperature).softmax(1).t().reshape(k, *small_size)
    return F.interpolate(soft[None], size=(height, width), mode="bilinear", align_corners=False)[0].clamp(0, 1)


class GridProposals(ProposalGenerator):
    """`k x k` soft block proposals for any image; needs no weights (spec `"grid:<k>"`)."""

    def __init__(self, k: int = 4):
        if int(k) < 1:
            raise ValueError(f"The grid size k must be >= 1, got {k}.")
        self.k = int(k)

    def __call__(self, images) -> list[Proposals]:
        return [Proposals(masks=grid_masks(self.k, image.height, image.width)) for image in load_images(images)]


class ColorClusterProposals(ProposalGenerator):
    """`k` soft colour-cluster proposals per image; needs no weights (spec `"kmeans:<k>"`)."""

    def __init__(self, k: int = 8, **kwargs):
        if int(k) < 1:
            raise ValueError(f"The number of clusters k must be >= 1, got {k}.")
        self.k, self.kwargs = int(k), kwargs

    def __call__(self, images) -> list[Proposals]:
        images = load_images(images)
        return [Proposals(masks=color_cluster_masks(image_to_tensor(image), self.k, **self.kwargs)) for image in images]
