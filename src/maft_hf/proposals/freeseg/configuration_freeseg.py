"""Configuration of the FreeSeg proposal generator shipped with the released MAFT checkpoints."""

from __future__ import annotations

from transformers import PretrainedConfig

# Normalisation of the generator's input, on 0-255 RGB images (detectron2 `MODEL.PIXEL_MEAN` / `PIXEL_STD`).
FREESEG_PIXEL_MEAN = (123.675, 116.28, 103.53)
FREESEG_PIXEL_STD = (58.395, 57.12, 57.375)


_CASTS = {
    **dict.fromkeys(("depths", "res5_multi_grid"), lambda values: [int(v) for v in values]),
    **dict.fromkeys(("pixel_mean", "pixel_std"), lambda values: [float(v) for v in values]),
    **dict.fromkeys(("norm_eps", "logit_scale"), float),
    **dict.fromkeys(("stride_in_1x1", "interaction_layer_scale", "pre_norm", "enforce_input_proj"), bool),
}  # other fields: int


class FreeSegConfig(PretrainedConfig):
    r"""Sizes of the FreeSeg generator; the defaults are the released model (`configs/coco-stuff-164k-156/eval.yaml`).

    Backbone: DeepLab ResNet with `depths` of res2..res5, a stem of three 3x3 convs (the first two half as wide),
    bottleneck width `width_per_group` x `num_groups` (doubled per stage), res5 per-block `res5_multi_grid`
    dilations. Pixel decoder: `conv_dim` [CONVS_DIM] (`mask_dim` must equal it), MSDeformAttn `encoder_*`. Text
    interaction: `interaction_dim` / `interaction_heads` [EMBED_DIM / NUM_HEADS]. Decoder: all `decoder_layers`
    [DEC_LAYERS] run; class-embedding MLP [EMBED_HIDDEN_DIM / EMBED_LAYERS] to `text_dim`. Input: `pixel_mean` /
    `pixel_std` on 0-255 RGB, zero-padding to `size_divisibility`, test-time resize to `test_short_side` (long side
    at most `test_max_size`).
    """

    model_type = "maft_freeseg"

    def __init__(
        self,
        num_channels: int = 3,
        stem_out_channels: int = 128,
        depths: list[int] | tuple[int, ...] = (3, 4, 23, 3),
        res2_out_channels: int = 256,
        width_per_group: int = 64,
        num_groups: int = 1,
        stride_in_1x1: bool = False,
        res4_dilation: int = 1,
        res5_dilation: int = 1,
        res5_multi_grid: list[int] | tuple[int, ...] = (1, 2, 4),
        norm_eps: float = 1e-5,
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm_num_groups: int = 32,
        encoder_layers: int = 6,
        encoder_attention_heads: int = 8,
        encoder_n_points: int = 4,
        encoder_ffn_dim: int = 1024,
        interaction_dim: int = 2048,
        interaction_heads: int = 8,
        interaction_layer_scale: bool = True,
        hidden_dim: int = 256,
        decoder_layers: int = 10,
        decoder_attention_heads: int = 8,
        decoder_ffn_dim: int = 2048,
        pre_norm: bool = False,
        enforce_input_proj: bool = False,
        num_queries: int = 100,
        text_dim: int = 512,
        class_embed_hidden_dim: int = 1024,
        class_embed_layers: int = 2,
        logit_scale: float = 100.0,
        pixel_mean: list[float] | tuple[float, ...] = FREESEG_PIXEL_MEAN,
        pixel_std: list[float] | tuple[float, ...] = FREESEG_PIXEL_STD,
        size_divisibility: int = 32,
        test_short_side: int = 640,
        test_max_size: int = 2560,
        **kwargs,
    ):
        for name, value in list(locals().items()):  # the arguments, in order, cast to their field types
            if name not in ("self", "kwargs", "__class__"):
                setattr(self, name, _CASTS.get(name, int)(value))
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        problems = []
        if len(self.depths) != 4 or min(self.depths) < 1:
            problems.append(f"depths must give >= 1 block for each of res2..res5, got {self.depths}")
        if len(self.res5_multi_grid) != self.depths[-1]:
            problems.append(
                f"res5_multi_grid needs one entry per res5 block ({self.depths[-1]}), got {self.res5_multi_grid}"
            )
        if self.res4_dilation not in (1, 2) or self.res5_dilation not in (1, 2, 4):
            got = (self.res4_dilation, self.res5_dilation)
            problems.append(f"res4_dilation must be 1 or 2 and res5_dilation 1, 2 or 4, got {got}")
        if self.mask_dim != self.conv_dim:
            problems.append(f"mask_dim ({self.mask_dim}) must equal conv_dim ({self.conv_dim})")
        for name in (
            "conv_dim / encoder_attention_heads",
            "interaction_dim / interaction_heads",
            "hidden_dim / decoder_attention_heads",
        ):
            dim, heads = (getattr(self, field) for field in name.split(" / "))
            if heads < 1 or dim % heads:
                problems.append(f"{name} must divide evenly, got {dim} / {heads}")
        if self.conv_dim % self.norm_num_groups:
            problems.append(f"conv_dim ({self.conv_dim}) must be a multiple of norm_num_groups")
        if self.hidden_dim % 2 or self.conv_dim % 2:
            problems.append("conv_dim and hidden_dim must be even (sine position embeddings)")
        if len(self.pixel_mean) != self.num_channels or len(self.pixel_std) != self.num_channels:
            problems.append("pixel_mean and pixel_std need one value per input channel")
        if self.size_divisibility < 1:
            problems.append(f"size_divisibility must be >= 1, got {self.size_divisibility}")
        if problems:
            raise ValueError("Invalid FreeSegConfig: " + "; ".join(problems) + ".")
