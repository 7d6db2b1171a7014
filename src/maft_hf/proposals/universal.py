"""Proposals from any transformers universal-segmentation checkpoint (Mask2Former, OneFormer, MaskFormer-like): its `N`
queries used class-agnostically, with their class scores (docs/proposals.md). Pre-processing is the checkpoint's image
processor when one loads, else an equivalent torch version (800 / 1333 / 32 and ImageNet statistics without one)."""

from __future__ import annotations

import torch
from transformers.image_transforms import get_size_with_aspect_ratio

from ..data.transforms import resize_image
from ..model.images import image_to_tensor, load_images
from . import ProposalGenerator, Proposals, mask_size_for
from ._images import IMAGENET_MEAN, IMAGENET_STD, from_pretrained, normalize_and_pad, resize_logits

ONEFORMER_TASK_TEXT = "the task is semantic"


def mask_logits_to_probabilities(mask_logits, padded_size, valid_size, output_size) -> torch.Tensor:
    """`(N, h, w)` query mask logits of one image -> `(N, H, W)` float32 probabilities at `output_size`: upsampled to
    `padded_size` (`align_corners=True`), cropped to `valid_size` (top-left), resized (`align_corners=False`)."""
    return resize_logits(mask_logits, padded_size, valid_size, output_size, align_corners=True).sigmoid_()


def class_probabilities(class_logits: torch.Tensor, renormalize: bool = True) -> torch.Tensor:
    """`(N, K + 1)` class logits with a last "no object" column -> `(N, K)` probabilities: the void logit dropped
    before the softmax (`renormalize`), or after it (MaskFormer's `semantic_inference`, rows sum to `1 - p_void`)."""
    if renormalize:
        return class_logits[:, :-1].float().softmax(-1)
    return class_logits.float().softmax(-1)[:, :-1]


class UniversalSegmentationProposals(ProposalGenerator):
    """Proposals with the generator's own class scores from a universal-segmentation model (path / Hub id, or a model
    with `masks_queries_logits (B, N, h, w)` and `class_queries_logits (B, N, K + 1)`): `num_proposals` keeps the top
    queries by non-void class probability; `use_image_processor=False` forces the torch pre-processing."""

    def __init__(
        self,
        model_or_path,
        device=None,
        num_proposals: int | None = None,
        *,
        image_processor=None,
        tokenizer=None,
        use_image_processor: bool = True,
        renormalize_classes: bool = True,
        local_files_only: bool | None = None,
    ):
        if num_proposals is not None and int(num_proposals) < 1:
            raise ValueError(f"num_proposals must be >= 1 or None, got {num_proposals}.")
        model = from_pretrained("AutoModelForUniversalSegmentation", model_or_path, local_files_only)
        self.model = model.to(device).eval()
        self.num_proposals = None if num_proposals is None else int(num_proposals)
        self.renormalize_classes = renormalize_classes
        self.use_image_processor = use_image_processor
        if image_processor is None:
            image_processor = from_pretrained("AutoImageProcessor", model_or_path, local_files_only, optional=True)
        self.image_processor = image_processor
        self.is_oneformer = getattr(self.model.config, "model_type", None) == "oneformer"
        if self.is_oneformer and tokenizer is None:
            tokenizer = from_pretrained("AutoTokenizer", model_or_path, local_files_only, optional=True)
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _setting(self, name: str, default):
        """The image processor's setting `name`, or `default` without a processor or value."""
        value = getattr(self.image_processor, name, None)
        return default if value is None else value

    def _normalization(self) -> tuple:
        """`(mean, std, rescale_factor)` of the processor (one number or three), else ImageNet's."""
        mean, std = self._setting("image_mean", IMAGENET_MEAN), self._setting("image_std", IMAGENET_STD)
        if not self._setting("do_normalize", True):
            mean, std = 0.0, 1.0
        rescale = self._setting("rescale_factor", 1 / 255) if self._setting("do_rescale", True) else 1.0
        return mean, std, float(rescale)

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        size = self._setting("size", {"shortest_edge": 800, "longest_edge": 1333})
        if not isinstance(size, dict):  # a SizeDict
            size = {key: getattr(size, key, None) for key in ("shortest_edge", "longest_edge", "height", "width")}
        if size.get("height") and size.get("width"):
            new_h, new_w = int(size["height"]), int(size["width"])
        else:
            shortest, longest = size.get("shortest_edge") or 800, size.get("longest_edge")
            new_h, new_w = get_size_with_aspect_ratio((height, width), shortest, longest)
        divisor = self._setting("size_divisor", 32 if self.image_processor is None else 0)
        if divisor:
            new_h, new_w = -(-new_h // divisor) * divisor, -(-new_w // divisor) * divisor
        return new_h, new_w

    def _torch_preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std, rescale = self._normalization()
        resized = [resize_image(image, self._target_size(*image.shape[-2:])) for image in images]
        return normalize_and_pad(resized, mean, std, rescale_factor=rescale)

    def _processor_preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = [image.permute(1, 2, 0).numpy() for image in images]
        kwargs = {"task_inputs": ["semantic"] * len(arrays)} if self.is_oneformer else {}
        inputs = self.image_processor(images=arrays, return_tensors="pt", **kwargs)
        pixel_values = inputs["pixel_values"]
        return pixel_values, inputs.get("pixel_mask", torch.ones_like(pixel_values[:, 0], dtype=torch.long))

    def _task_inputs(self, batch_size: int) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError(
                "OneFormer needs task_inputs, i.e. a tokenizer for 'the task is semantic': the checkpoint has none "
                "that loads here; pass tokenizer=... (e.g. a CLIPTokenizer)."
            )
        length = int(getattr(self.model.config, "task_seq_len", 77))
        tokens = self.tokenizer(
            [ONEFORMER_TASK_TEXT], padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        ids = tokens["input_ids"] * tokens["attention_mask"]
        return ids.expand(batch_size, -1).to(self.device)

    @torch.no_grad()
    def _run(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor, output_sizes: list[tuple[int, int]]):
        dtype = next(self.model.parameters()).dtype
        kwargs = {"pixel_values": pixel_values.to(self.device, dtype), "pixel_mask": pixel_mask.to(self.device)}
        if self.is_oneformer:
            kwargs["task_inputs"] = self._task_inputs(pixel_values.shape[0])
        outputs = self.model(**kwargs)
        mask_logits, class_logits = outputs.masks_queries_logits, outputs.class_queries_logits
        id2label = getattr(self.model.config, "id2label", None) or {}  # `class_<i>` where an id is missing
        names = [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(class_logits.shape[-1] - 1)]
        results = []
        for index, output_size in enumerate(output_sizes):
            logits, keep = class_logits[index].float(), slice(None)
            if self.num_proposals is not None and self.num_proposals < logits.shape[0]:
                confidence = logits.softmax(-1)[:, :-1].amax(-1)
                keep = confidence.topk(self.num_proposals).indices.sort().values
            valid = (int(pixel_mask[index, :, 0].sum()), int(pixel_mask[index, 0].sum()))
            target = mask_size_for(output_size, valid)
            masks = mask_logits_to_probabilities(mask_logits[index, keep], pixel_values.shape[-2:], valid, target)
            scores = class_probabilities(logits[keep], renormalize=self.renormalize_classes)
            image_size = output_size if target != output_size else None
            results.append(Proposals(masks=masks, class_scores=scores, class_names=list(names), image_size=image_size))
        return results

    def __call__(self, images) -> list[Proposals]:
        """One [`Proposals`] per image (PIL, `(H, W, 3)` array or `(3, H, W)` uint8 tensor), at its resolution."""
        tensors = [image_to_tensor(image) for image in load_images(images)]
        use_processor = self.image_processor is not None and self.use_image_processor
        prepared = self._processor_preprocess(tensors) if use_processor else self._torch_preprocess(tensors)
        return self._run(*prepared, [tuple(image.shape[-2:]) for image in tensors])

    def generate_prepared(self, images) -> list[Proposals]:
        """Proposals for `(3, H_i, W_i)` uint8 tensors already at the working size (e.g. 640 px training crops): only
        normalised and padded to a multiple of `size_divisor` (32 by default), as the released training does."""
        images = list(images)
        uint8 = (isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 for image in images)
        if not images or not all(uint8) or any(len(image) != 3 for image in images):
            raise ValueError("generate_prepared expects (3, H, W) uint8 tensors (at least one).")
        mean, std, rescale = self._normalization()
        divisor = int(self._setting("size_divisor", 32) or 32)
        images = [image.to(self.device) for image in images]
        pixel_values, pixel_mask = normalize_and_pad(images, mean, std, rescale_factor=rescale, size_divisor=divisor)
        return self._run(pixel_values, pixel_mask, [tuple(image.shape[-2:]) for image in images])
