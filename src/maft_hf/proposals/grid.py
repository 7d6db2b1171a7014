"""A weight-free proposal source: the image tiled into k x k soft blocks (for offline demos and smoke tests)."""

from __future__ import annotations

import torch

from ..model.images import load_images
from . import ProposalGenerator, Proposals


def _soft_intervals(k: int, size: int) -> torch.Tensor:
    """`(k, size)` soft indicators `clamp(0.5 + 2 k d, 0, 1)` of the `k` equal intervals of one axis at the pixel
    centres, `d` the signed distance (positive inside) to the interval's inner borders (not the image border)."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    starts = torch.arange(k, dtype=torch.float32)[:, None] / k
    to_start = torch.where(starts > 0, centres - starts, torch.inf)
    to_end = torch.where(starts + 1 / k < 1, starts + 1 / k - centres, torch.inf)
    distance = torch.minimum(to_start, to_end)
    return (0.5 + 2 * k * distance).clamp(0.0, 1.0)


def grid_masks(k: int, height: int, width: int) -> torch.Tensor:
    """`(k*k, height, width)` soft block masks, row-major: mask `i * k + j` is `min(row_i(y), col_j(x))`, 1 from a
    quarter block inside, 0.5 on the border, 0 from a quarter block outside; every pixel is `> 0.5` in its block."""
    if int(k) < 1:
        raise ValueError(f"The grid size k must be >= 1, got {k}.")
    if height < 1 or width < 1:
        raise ValueError(f"Expected a positive image size, got {(height, width)}.")
    k = int(k)
    rows, cols = _soft_intervals(k, height), _soft_intervals(k, width)
    masks = torch.minimum(rows[:, None, :, None], cols[None, :, None, :])
    return masks.reshape(k * k, height, width)


class GridProposals(ProposalGenerator):
    """`k x k` soft block proposals for any image; needs no weights."""

    def __init__(self, k: int = 4):
        if int(k) < 1:
            raise ValueError(f"The grid size k must be >= 1, got {k}.")
        self.k = int(k)

    def __call__(self, images) -> list[Proposals]:
        return [Proposals(masks=grid_masks(self.k, image.height, image.width)) for image in load_images(images)]
