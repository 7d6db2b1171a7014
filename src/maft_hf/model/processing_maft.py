"""Pre-processing for MAFT: images at the model's input size (no centre crop), class prompts, proposal masks.

The released MAFT code normalises with CLIP's mean/std and resizes the whole image to 480x480 with bilinear
interpolation (`align_corners=False`, no antialias) without keeping the aspect ratio. `MAFTImageProcessor` does
exactly that in torch (no torchvision needed). Since the resize is linear with weights summing to one, normalising
before or after it gives the same result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoProcessor, BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.processing_utils import ProcessorMixin

from .configuration_maft import MAFTConfig
from .images import image_to_tensor
from .modeling_maft import validate_proposal_values


def to_clip_input(
    image: torch.Tensor,
    size: int = 480,
    image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
    image_std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """CLIP pixel values: normalise with the mean/std (CLIP's by default; given on the 0..1 scale, applied on the
    0..255 scale), then resize bilinearly (`align_corners=False`, no antialias) to `size x size`, as the released
    model does. The one implementation behind training batches and `MAFTImageProcessor`.

    Args:
        image: `(3, H, W)` or `(B, 3, H, W)`, uint8 or float on the 0..255 scale.
        size: output side (480 for MAFT ViT-B/16).
        image_mean / image_std: per-channel statistics on the 0..1 scale.

    Returns:
        float32 `(3, size, size)` or `(B, 3, size, size)`, matching the input's batch dimension.
    """
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
        raise ValueError(f"image must be (3, H, W) or (B, 3, H, W) on the 0..255 scale, got {shape}.")
    batched = image.ndim == 4
    pixels = image.float() if batched else image[None].float()
    mean = torch.tensor(list(image_mean), device=pixels.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(list(image_std), device=pixels.device).view(1, 3, 1, 1) * 255.0
    pixels = (pixels - mean) / std
    if tuple(pixels.shape[-2:]) != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    return pixels if batched else pixels[0]


class MAFTImageProcessor(BaseImageProcessor):
    r"""
    Turns images into `pixel_values (batch, 3, size, size)` the way the released MAFT code does: scale to [0, 1],
    normalise with CLIP's mean/std, resize bilinearly (`align_corners=False`) to `size x size` without keeping the
    aspect ratio and without a centre crop. Proposal masks passed along are returned unchanged.

    Args:
        size (`int`, *optional*, defaults to 480): side of the square model input.
        image_mean / image_std (`list[float]`, *optional*): CLIP's by default.

    Example:

    ```python
    >>>     >>> from maft_hf import MAFTImageProcessor
    >>> processor = MAFTImageProcessor(size=480)
    >>> processor(Image.new("RGB", (640, 427)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 480, 480])
    ```"""

    model_input_names = ["pixel_values"]

    def __init__(self, size: int = 480, image_mean=None, image_std=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, dict):
            size = size.get("height", size.get("shortest_edge"))
        self.size = int(size)
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)

    def to_tensor(self, image) -> torch.Tensor:
        """`(3, H, W)` float in [0, 1] from any image accepted by [`~maft_hf.images.load_image`]."""
        return image_to_tensor(image).float() / 255.0

    def normalize_and_resize(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """`(B, 3, H, W)` in [0, 1] -> `(B, 3, size, size)` normalised, bilinear, `align_corners=False`
        (the same function as the training batches, [`to_clip_input`])."""
        return to_clip_input(images * 255.0, size or self.size, self.image_mean, self.image_std)

    def preprocess(self, images, proposal_masks=None, return_tensors="pt", **kwargs) -> BatchFeature:
        """Prepare one image or a list of images (paths, PIL, numpy `(H, W[, C])`, tensors `(3, H, W)`)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("No images were given.")
        pixel_values = torch.stack([self.normalize_and_resize(self.to_tensor(im)[None])[0] for im in images])
        data = {"pixel_values": pixel_values}
        if proposal_masks is not None:
            validate_proposal_values(proposal_masks)  # the model reads no values (no host synchronisation)
            data["proposal_masks"] = proposal_masks
        return BatchFeature(data=data, tensor_type=None)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


class MAFTProcessor(ProcessorMixin):
    r"""
    Wraps a [`MAFTImageProcessor`] and a CLIP tokenizer: images -> `pixel_values`, class prompts -> `input_ids` /
    `attention_mask`, `proposal_masks` carried along unchanged.

    Example:

    ```python
    >>> processor = MAFTProcessor.from_pretrained("path/to/maft-checkpoint")  # doctest: +SKIP
    >>> inputs = processor(images=image, text=["a photo of a cat."], proposal_masks=masks)  # doctest: +SKIP
    ```"""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def __call__(self, images=None, text: str | Sequence[str] | None = None, proposal_masks=None, **kwargs):
        if images is None and text is None:
            raise ValueError("MAFTProcessor needs images, text, or both.")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, proposal_masks=proposal_masks))
        if text is not None:
            data.update(self.tokenizer(text, padding=True, return_tensors="pt", **kwargs))
        return BatchFeature(data=data)


def register_processors() -> None:
    """Register the image processor and processor with the Auto classes for `MAFTConfig`."""
    AutoImageProcessor.register(MAFTConfig, image_processor_classes={"pil": MAFTImageProcessor}, exist_ok=True)
    AutoProcessor.register(MAFTConfig, MAFTProcessor, exist_ok=True)
    MAFTImageProcessor.register_for_auto_class("AutoImageProcessor")
    MAFTProcessor.register_for_auto_class("AutoProcessor")


__all__ = ["MAFTImageProcessor", "MAFTProcessor", "register_processors", "to_clip_input"]
