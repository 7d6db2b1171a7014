"""Pre-processing for MAFT: images at the model's square input size (no centre crop), class prompts, proposal masks.
Both recipes normalise with CLIP's mean/std and resize bilinearly (`align_corners=False`, no antialias), in torch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.processing_utils import ProcessorMixin

from .configuration_maft import MAFTConfig
from .images import image_to_tensor, load_image, load_images, shortest_edge_size
from .modeling_maft import validate_proposal_values

PREPROCESSING_MODES = ("direct", "released")


def to_clip_input(
    image: torch.Tensor,
    size: int = 480,
    image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
    image_std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """`(3, H, W)` or `(B, 3, H, W)` on the 0..255 scale -> float32 CLIP pixel values at `size x size` (normalised,
    then resized as released)."""
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
        raise ValueError(f"image must be (3, H, W) or (B, 3, H, W) on the 0..255 scale, got {shape}.")
    batched = image.ndim == 4
    pixels = image.float() if batched else image[None].float()
    mean, std = _mean_std(image_mean, image_std, device=pixels.device)
    pixels = (pixels - mean) / std
    if tuple(pixels.shape[-2:]) != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    return pixels if batched else pixels[0]


def _mean_std(image_mean, image_std, channels=slice(None), device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP mean and std given on the 0..1 scale -> `(k, 1, 1)` float32 tensors on the 0..255 scale."""
    return tuple(
        torch.tensor(list(v), dtype=torch.float32, device=device)[channels].view(-1, 1, 1) * 255.0
        for v in (image_mean, image_std)
    )


class MAFTImageProcessor(BaseImageProcessor):
    r"""
    Images -> `pixel_values (batch, 3, size, size)`. `preprocessing="direct"` squeezes the whole image; `"released"`
    is the authors' test-time path (PIL `ResizeShortestEdge(short_side, max_size)`, normalise, zero-pad to a multiple
    of `size_divisor`, squeeze the canvas) and adds `resized_sizes` and `canvas_sizes (B, 2)`. Proposal masks pass.

    Example:

    ```python
    >>> from PIL import Image
    >>> from maft_hf import MAFTImageProcessor
    >>> processor = MAFTImageProcessor(size=480)
    >>> processor(Image.new("RGB", (640, 427)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 480, 480])
    >>> processor(Image.new("RGB", (640, 427)), preprocessing="released")["canvas_sizes"].tolist()
    [[640, 960]]
    ```"""

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 480,
        image_mean=None,
        image_std=None,
        preprocessing: str = "direct",
        short_side: int = 640,
        max_size: int = 2560,
        size_divisor: int = 32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(size, dict):
            size = size.get("height", size.get("shortest_edge"))
        self.size = int(size)
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)
        self.preprocessing = _check_preprocessing(preprocessing)
        self.short_side, self.max_size, self.size_divisor = int(short_side), int(max_size), int(size_divisor)

    def released_resize(self, image) -> Image.Image:
        """The released `ResizeShortestEdge`: PIL bilinear on the uint8 RGB image, detectron2's output size."""
        image = load_image(image)
        height, width = shortest_edge_size(image.height, image.width, self.short_side, self.max_size)
        return image.resize((width, height), Image.BILINEAR)

    def _squeeze(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.interpolate(pixels[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]

    def _direct(self, image) -> torch.Tensor:
        """One channel at a time, normalised in place: one float copy of a channel at the image size."""
        pixels, out = image_to_tensor(image), []
        for c in range(3):
            mean, std = _mean_std(self.image_mean, self.image_std, slice(c, c + 1))
            out.append(self._squeeze(pixels[c : c + 1].float().sub_(mean).div_(std)))
        return torch.cat(out)

    def _released(self, image) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        resized = image_to_tensor(self.released_resize(image))
        height, width = resized.shape[-2:]
        canvas = tuple(-(-side // self.size_divisor) * self.size_divisor for side in (height, width))
        mean, std = _mean_std(self.image_mean, self.image_std)
        padded = torch.zeros(3, *canvas)  # zero after normalisation
        padded[:, :height, :width] = (resized.float() - mean) / std
        return self._squeeze(padded), (height, width), canvas

    def preprocess(
        self, images, proposal_masks=None, return_tensors="pt", preprocessing=None, **kwargs
    ) -> BatchFeature:
        """Prepare one image or a list of images (any input of [`~maft_hf.model.images.load_image`])."""
        images = load_images(images)
        if _check_preprocessing(preprocessing or self.preprocessing) == "released":
            outputs = [self._released(image) for image in images]
            data = {
                "pixel_values": torch.stack([pixels for pixels, _, _ in outputs]),
                "resized_sizes": torch.tensor([resized for _, resized, _ in outputs]),
                "canvas_sizes": torch.tensor([canvas for _, _, canvas in outputs]),
            }
        else:
            data = {"pixel_values": torch.stack([self._direct(image) for image in images])}
        if proposal_masks is not None:
            validate_proposal_values(proposal_masks)  # the model reads no values (no host synchronisation)
            data["proposal_masks"] = proposal_masks
        return BatchFeature(data=data, tensor_type=None)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


def _check_preprocessing(name: str) -> str:
    if name not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING_MODES}, got {name!r}.")
    return name


class MAFTProcessor(ProcessorMixin):
    r"""
    A [`MAFTImageProcessor`] and a CLIP tokenizer: images -> `pixel_values`, prompts -> `input_ids`, masks as given.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf import MAFTImageProcessor, MAFTProcessor
    >>> from maft_hf.testing import build_tiny_tokenizer

    >>> processor = MAFTProcessor(MAFTImageProcessor(size=32), build_tiny_tokenizer())
    >>> inputs = processor(images=torch.zeros(3, 40, 60), text=["a cat.", "sky."], proposal_masks=torch.rand(1, 4, 40, 60))
    >>> sorted(inputs.keys())
    ['attention_mask', 'input_ids', 'pixel_values', 'proposal_masks']
    ```"""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def __call__(
        self, images=None, text: str | Sequence[str] | None = None, proposal_masks=None, preprocessing=None, **kwargs
    ):
        if images is None and text is None:
            raise ValueError("MAFTProcessor needs images, text, or both.")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, proposal_masks=proposal_masks, preprocessing=preprocessing))
        if text is not None:
            data.update(self.tokenizer(text, padding=True, return_tensors="pt", **kwargs))
        return BatchFeature(data=data)


def register_processors() -> None:
    AutoImageProcessor.register(MAFTConfig, image_processor_classes={"pil": MAFTImageProcessor}, exist_ok=True)
    AutoProcessor.register(MAFTConfig, MAFTProcessor, exist_ok=True)
    MAFTImageProcessor.register_for_auto_class("AutoImageProcessor")
    MAFTProcessor.register_for_auto_class("AutoProcessor")
