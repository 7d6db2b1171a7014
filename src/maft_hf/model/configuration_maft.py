"""Configurations of the mask-aware CLIP (IP-CLIP) encoder and of the full MAFT model."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

POSITION_EMBEDDING_MODES = ("maft", "hf")


@strict
class MaskAwareCLIPVisionConfig(CLIPVisionConfig):
    r"""
    A [`~transformers.CLIPVisionConfig`] plus the IP-CLIP fields (paper section 4.1):

    mask_start_layer (`int`, *optional*):
        First layer of mask-aware attention (the [CLS] token is copied per proposal before it), in
        `[0, num_hidden_layers - 1]`; defaults to `2 * num_hidden_layers // 3` (8 for ViT-B, the paper's Tab. 4e).
    mask_threshold (`float`, *optional*, defaults to 0.5):
        A patch is visible to a proposal where the mask resized to the patch grid is `>= mask_threshold`, in (0, 1].
    input_image_size (`int`, *optional*):
        Side of the square model input (480 as released; defaults to `image_size`); the patch grid is
        `input_image_size // patch_size` a side, as released.
    position_embedding_interpolation (`str`, *optional*, defaults to `"maft"`):
        `"maft"` (bicubic, `align_corners=True`, as released) or `"hf"` (transformers' `interpolate_pos_encoding`).

    Example:

    ```python
    >>> from maft_hf import MaskAwareCLIPVisionConfig, MaskAwareCLIPVisionModel

    >>> config = MaskAwareCLIPVisionConfig(patch_size=16, input_image_size=480)
    >>> config.mask_start_layer
    8
    >>> model = MaskAwareCLIPVisionModel(config)
    ```"""

    model_type = "maft_vision_model"
    base_config_key = "vision_config"

    mask_start_layer: int | None = None
    mask_threshold: float = 0.5
    input_image_size: int | None = None
    position_embedding_interpolation: str = "maft"

    def __post_init__(self, **kwargs):
        kwargs.pop("model_type", None)  # a plain CLIP vision config carries "clip_vision_model"
        if self.mask_start_layer is None:
            self.mask_start_layer = 2 * self.num_hidden_layers // 3
        if self.input_image_size is None:
            self.input_image_size = self.image_size
        self.validate_mask_fields()
        super().__post_init__(**kwargs)

    def validate_mask_fields(self):
        """Raise a `ValueError` naming the expected range and the received value of each MAFT field."""
        if not 0 <= self.mask_start_layer < self.num_hidden_layers:
            raise ValueError(
                f"mask_start_layer must be in [0, {self.num_hidden_layers - 1}] for a model with "
                f"{self.num_hidden_layers} layers, got {self.mask_start_layer}."
            )
        if not 0.0 < self.mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1], got {self.mask_threshold}.")
        if self.position_embedding_interpolation not in POSITION_EMBEDDING_MODES:
            raise ValueError(
                f"position_embedding_interpolation must be one of {POSITION_EMBEDDING_MODES}, "
                f"got {self.position_embedding_interpolation!r}."
            )
        if self.input_image_size < self.patch_size:
            raise ValueError(
                f"input_image_size ({self.input_image_size}) must be at least patch_size ({self.patch_size})."
            )


@strict
class MAFTConfig(CLIPConfig):
    r"""
    A [`~transformers.CLIPConfig`] whose vision tower is [`MaskAwareCLIPVisionConfig`]; any CLIP `config.json` loads.

    Example:

    ```python
    >>> from maft_hf import MAFTConfig, MaskAwareCLIPModel

    >>> config = MAFTConfig(vision_config={"patch_size": 16, "input_image_size": 480, "mask_start_layer": 8})
    >>> model = MaskAwareCLIPModel(config)
    ```"""

    model_type = "maft"
    sub_configs_defaults = {
        "vision_config": MaskAwareCLIPVisionConfig,
        "text_config": CLIPTextConfig,
    }
