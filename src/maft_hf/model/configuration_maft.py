"""Configurations of the mask-aware CLIP (IP-CLIP) encoder and of the full MAFT model."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

POSITION_EMBEDDING_MODES = ("maft", "hf")


@strict
class MaskAwareCLIPVisionConfig(CLIPVisionConfig):
    r"""
    Configuration of [`MaskAwareCLIPVisionModel`]: a [`~transformers.CLIPVisionConfig`] plus the fields of the
    IP-CLIP encoder of MAFT (paper section 4.1).

    mask_start_layer (`int`, *optional*):
        Index `L` of the first encoder layer that runs the mask-aware attention. Layers `0 .. L-1` run exactly as
        CLIP; before layer `L` the [CLS] token is copied once per proposal. Must lie in
        `[0, num_hidden_layers - 1]`. Defaults to `2 * num_hidden_layers // 3`, i.e. 8 for ViT-B (12 layers),
        the paper's choice (Tab. 4e), and 16 for ViT-L (24 layers).
    mask_threshold (`float`, *optional*, defaults to 0.5):
        A patch is visible to a proposal's [CLS] copy where the proposal, bilinearly resized to the patch grid
        (`align_corners=False`), is `>= mask_threshold`. Must lie in `(0, 1]`.
    input_image_size (`int`, *optional*):
        Side of the square images the model is run at (480 for the released MAFT ViT-B/16 and ViT-L/14). The
        processor resizes to it and the position embeddings of the `image_size` grid are resized on the fly to its
        patch grid, `input_image_size // patch_size` a side: like the release, a size that is not a multiple of
        the patch size leaves its last `input_image_size % patch_size` pixel rows and columns unread (ViT-L/14 at
        480 px reads a 34 x 34 grid from the top-left 476 px). Defaults to `image_size`.
    position_embedding_interpolation (`str`, *optional*, defaults to `"maft"`):
        How position embeddings are resized when the input is not `image_size`: `"maft"` (bicubic,
        `align_corners=True`, class position kept, as the released MAFT code) or `"hf"` (transformers'
        `interpolate_pos_encoding`, bicubic with `align_corners=False`).

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
    Configuration of [`MaskAwareCLIPModel`]: a [`~transformers.CLIPConfig`] whose vision tower is the mask-aware
    IP-CLIP encoder ([`MaskAwareCLIPVisionConfig`]). A MAFT checkpoint holds exactly CLIP's parameters, so any
    CLIP `config.json` loads into this class.

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
