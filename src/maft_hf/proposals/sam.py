"""Class-agnostic proposals from Segment Anything (transformers `SamModel`), without torchvision: SAM's automatic mask
generation on a single crop, with our own point grid and box NMS (docs/proposals.md)."""

from __future__ import annotations

import torch

from ..model.images import load_images
from . import ProposalGenerator, Proposals, mask_size_for
from ._images import from_pretrained, resize_logits


def point_grid(points_per_side: int) -> torch.Tensor:
    """`(n * n, 2)` points `(x, y)` in [0, 1]: cell centres of a regular `n x n` grid, row-major (SAM's grid)."""
    if int(points_per_side) < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}.")
    n = int(points_per_side)
    ticks = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    return torch.stack([ticks.repeat(n), ticks.repeat_interleave(n)], dim=-1)


def stability_scores(mask_logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """`(N, H, W)` logits -> `(N,)` IoU of the masks at `threshold + offset` and `threshold - offset` (0 if empty)."""
    flat = mask_logits.flatten(1)
    intersections = (flat > mask_threshold + offset).sum(-1).float()
    unions = (flat > mask_threshold - offset).sum(-1).float()
    return intersections / unions.clamp(min=1)  # an empty union has an empty intersection


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """`(N, H, W)` bool -> `(N, 4)` `(x0, y0, x1, y1)` inclusive pixel bounds (all 0 for an empty mask)."""
    rows, cols = masks.any(-1).int(), masks.any(-2).int()  # (N, H), (N, W)
    y1 = rows.shape[-1] - 1 - rows.flip(-1).argmax(-1)  # argmax: the first maximum
    x1 = cols.shape[-1] - 1 - cols.flip(-1).argmax(-1)
    boxes = torch.stack([cols.argmax(-1), rows.argmax(-1), x1, y1], dim=-1)
    return boxes * rows.amax(-1, keepdim=True)


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU `(N, M)` of inclusive pixel boxes `(x0, y0, x1, y1)`, each `(x1 - x0 + 1) * (y1 - y0 + 1)` pixels large."""
    a, b = boxes_a.float()[:, None], boxes_b.float()[None]  # (N, 1, 4), (1, M, 4)
    inter = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2]) + 1).clamp(min=0).prod(-1)
    area_a, area_b = (a[..., 2:] - a[..., :2] + 1).prod(-1), (b[..., 2:] - b[..., :2] + 1).prod(-1)
    return inter / (area_a + area_b - inter)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes by decreasing score (dropped: IoU `> iou_threshold` with a kept one)."""
    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(order.numel(), dtype=torch.bool, device=boxes.device)
    keep = []
    for index in range(order.numel()):
        if not suppressed[index]:
            keep.append(index)
            suppressed |= iou[index] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


class SAMProposals(ProposalGenerator):
    """Class-agnostic proposals of a `SamModel` (path / Hub id or instance) prompted by a grid of `points_per_side ** 2`
    points (docs/proposals.md), 3 masks each, filtered by predicted IoU, stability and box NMS (`nms_iou`);
    `max_proposals` keeps the highest predicted IoUs (None: all)."""

    def __init__(
        self,
        model_or_path,
        points_per_side: int = 16,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.85,
        nms_iou: float = 0.7,
        max_proposals: int | None = None,
        points_per_batch: int = 64,
        *,
        device=None,
        image_processor=None,
        mask_threshold: float = 0.0,
        stability_score_offset: float = 1.0,
        local_files_only: bool | None = None,
    ):
        if int(points_per_batch) < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}.")
        if max_proposals is not None and int(max_proposals) < 1:
            raise ValueError(f"max_proposals must be >= 1 or None, got {max_proposals}.")
        self.grid = point_grid(points_per_side)
        self.model = from_pretrained("SamModel", model_or_path, local_files_only).to(device).eval()
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.nms_iou = float(nms_iou)
        self.max_proposals = None if max_proposals is None else int(max_proposals)
        self.points_per_batch = int(points_per_batch)
        self.mask_threshold = float(mask_threshold)
        self.stability_score_offset = float(stability_score_offset)
        if image_processor is None:
            image_processor = from_pretrained("SamImageProcessor", model_or_path, local_files_only, optional=True)
        if image_processor is None:  # one built from the config (transformers' PIL backend without torchvision)
            from transformers import SamImageProcessor

            side = int(self.model.config.vision_config.image_size)
            image_processor = SamImageProcessor(size=dict(longest_edge=side), pad_size=dict(height=side, width=side))
        self.image_processor = image_processor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _generate_one(self, image) -> Proposals:
        image_size = (image.height, image.width)
        inputs = self.image_processor(images=[image], return_tensors="pt")
        resized_size = tuple(int(side) for side in inputs["reshaped_input_sizes"][0])
        output_size = mask_size_for(image_size, resized_size)  # the working size for huge images
        pixel_values = inputs["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
        padded_size = tuple(pixel_values.shape[-2:])
        embeddings = self.model.get_image_embeddings(pixel_values)
        points = self.grid.to(self.device) * torch.tensor(resized_size[::-1], device=self.device)
        kept = []  # (low-res logits, predicted IoUs, boxes) of the masks that pass the filters
        best_low_res, best_score = None, -float("inf")
        for batch in points.split(self.points_per_batch):  # each point a foreground prompt (SamModel's default labels)
            outputs = self.model(image_embeddings=embeddings, input_points=batch[None, :, None], multimask_output=True)
            low_res = outputs.pred_masks[0].flatten(0, 1)  # (P * 3, h, w)
            scores = outputs.iou_scores[0].flatten().float()  # (P * 3,)
            top = int(scores.argmax())
            if scores[top] > best_score:
                best_score, best_low_res = float(scores[top]), low_res[top : top + 1]
            candidates = (scores > self.pred_iou_thresh).nonzero().flatten()
            if candidates.numel() == 0:
                continue
            logits = resize_logits(low_res[candidates], padded_size, resized_size, output_size, align_corners=False)
            stable = stability_scores(logits, self.mask_threshold, self.stability_score_offset)
            binary = logits > self.mask_threshold
            keep = (stable > self.stability_score_thresh) & binary.flatten(1).any(-1)
            kept.append((low_res[candidates[keep]], scores[candidates[keep]], masks_to_boxes(binary[keep])))
        low_res, scores, boxes = (torch.cat(parts) for parts in zip(*kept)) if kept else [best_low_res[:0]] * 3
        if len(low_res):
            low_res = low_res[box_nms(boxes, scores, self.nms_iou)[: self.max_proposals]]
        else:  # nothing survived: fall back to the best-scoring mask
            low_res = best_low_res
        masks = resize_logits(low_res, padded_size, resized_size, output_size, align_corners=False).sigmoid_()
        return Proposals(masks=masks, image_size=image_size if output_size != image_size else None)

    def __call__(self, images) -> list[Proposals]:
        """Proposals at each image's resolution: `masks (N, H, W)` probabilities, `N >= 1` chosen by SAM."""
        return [self._generate_one(image) for image in load_images(images)]
