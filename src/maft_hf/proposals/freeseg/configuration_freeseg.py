"""Configuration of the FreeSeg proposal generator shipped with the released MAFT checkpoints."""

from __future__ import annotations

from transformers import PretrainedConfig

# Normalisation of the generator's input, on 0-255 RGB images (detectron2 `MODEL.PIXEL_MEAN` / `PIXEL_STD`).
FREESEG_PIXEL_MEAN = (123.675, 116.28, 103.53)
FREESEG_PIXEL_STD = (58.395, 57.12, 57.375)


class FreeSegConfig(PretrainedConfig):
    r"""Sizes of the FreeSeg generator (DeepLab ResNet + MSDeformAttn pixel decoder + text interaction + masked-attention
    decoder with text-embedding class head). The defaults are the released MAFT/FreeSeg model
    (`configs/coco-stuff-164k-156/eval.yaml`).

    Args:
        num_channels: input channels.
        stem_out_channels: output channels of the DeepLab stem (three 3x3 convs; the first two have half as many).
        depths: bottleneck blocks of res2..res5 (`[3, 4, 23, 3]` is ResNet-101).
        res2_out_channels: output channels of res2 (doubled at each later stage).
        width_per_group: bottleneck width of res2 (times `num_groups`; doubled at each later stage).
        num_groups: groups of the 3x3 convolutions.
        stride_in_1x1: whether a stage's stride sits in the first 1x1 conv (False: in the 3x3, as released).
        res4_dilation: dilation of res4 (1 as released).
        res5_dilation: dilation of res5 (1 as released); res5 then keeps stride 2 and its blocks use
            `res5_dilation * res5_multi_grid[i]`.
        res5_multi_grid: per-block dilation multipliers of res5 (`[1, 2, 4]` as released).
        norm_eps: epsilon of the frozen batch norms of the backbone.
        conv_dim: channels of the pixel decoder (`SEM_SEG_HEAD.CONVS_DIM`).
        mask_dim: channels of the mask features (`SEM_SEG_HEAD.MASK_DIM`); must equal `conv_dim` (the interaction
            normalises both with one LayerNorm).
        norm_num_groups: groups of the pixel decoder's GroupNorms (32 as released).
        encoder_layers: MSDeformAttn encoder layers on res3-res5.
        encoder_attention_heads: heads of the deformable attention.
        encoder_n_points: sampling points per head and level.
        encoder_ffn_dim: feed-forward width of the encoder (1024 as released).
        interaction_dim: inner width of the text interaction attention (`SEM_SEG_HEAD.EMBED_DIM`, 2048).
        interaction_heads: heads of the text interaction attention (`SEM_SEG_HEAD.NUM_HEADS`).
        interaction_layer_scale: whether the interaction scales its update by a learned `gamma`.
        hidden_dim: width of the transformer decoder (`MASK_FORMER.HIDDEN_DIM`).
        decoder_layers: masked-attention decoder layers (`MASK_FORMER.DEC_LAYERS`: 10, all of them run).
        decoder_attention_heads: heads of the decoder attentions.
        decoder_ffn_dim: feed-forward width of the decoder.
        pre_norm: pre-LayerNorm decoder layers (False as released).
        enforce_input_proj: 1x1 input projections before the decoder even when `conv_dim == hidden_dim`.
        num_queries: object queries, i.e. proposals per image.
        text_dim: dimension of the class (text) embeddings the queries predict (`SEM_SEG_HEAD.EMBEDDING_DIM`).
        class_embed_hidden_dim: hidden width of the class-embedding MLP (`SEM_SEG_HEAD.EMBED_HIDDEN_DIM`).
        class_embed_layers: layers of the class-embedding MLP (`SEM_SEG_HEAD.EMBED_LAYERS`).
        logit_scale: temperature of the query/text cosine similarities (100, fixed in the release).
        pixel_mean, pixel_std: per-channel normalisation of 0-255 RGB input.
        size_divisibility: the normalised input is zero-padded bottom/right to a multiple of this.
        test_short_side, test_max_size: test-time `ResizeShortestEdge` (640, long side capped at 2560).
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
        self.num_channels = int(num_channels)
        self.stem_out_channels = int(stem_out_channels)
        self.depths = [int(d) for d in depths]
        self.res2_out_channels = int(res2_out_channels)
        self.width_per_group = int(width_per_group)
        self.num_groups = int(num_groups)
        self.stride_in_1x1 = bool(stride_in_1x1)
        self.res4_dilation = int(res4_dilation)
        self.res5_dilation = int(res5_dilation)
        self.res5_multi_grid = [int(g) for g in res5_multi_grid]
        self.norm_eps = float(norm_eps)
        self.conv_dim = int(conv_dim)
        self.mask_dim = int(mask_dim)
        self.norm_num_groups = int(norm_num_groups)
        self.encoder_layers = int(encoder_layers)
        self.encoder_attention_heads = int(encoder_attention_heads)
        self.encoder_n_points = int(encoder_n_points)
        self.encoder_ffn_dim = int(encoder_ffn_dim)
        self.interaction_dim = int(interaction_dim)
        self.interaction_heads = int(interaction_heads)
        self.interaction_layer_scale = bool(interaction_layer_scale)
        self.hidden_dim = int(hidden_dim)
        self.decoder_layers = int(decoder_layers)
        self.decoder_attention_heads = int(decoder_attention_heads)
        self.decoder_ffn_dim = int(decoder_ffn_dim)
        self.pre_norm = bool(pre_norm)
        self.enforce_input_proj = bool(enforce_input_proj)
        self.num_queries = int(num_queries)
        self.text_dim = int(text_dim)
        self.class_embed_hidden_dim = int(class_embed_hidden_dim)
        self.class_embed_layers = int(class_embed_layers)
        self.logit_scale = float(logit_scale)
        self.pixel_mean = [float(v) for v in pixel_mean]
        self.pixel_std = [float(v) for v in pixel_std]
        self.size_divisibility = int(size_divisibility)
        self.test_short_side = int(test_short_side)
        self.test_max_size = int(test_max_size)
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
            problems.append(
                f"res4_dilation must be 1 or 2 and res5_dilation 1, 2 or 4, got {self.res4_dilation}, {self.res5_dilation}"
            )
        if self.mask_dim != self.conv_dim:
            problems.append(f"mask_dim ({self.mask_dim}) must equal conv_dim ({self.conv_dim})")
        for name, dim, heads in (
            ("conv_dim / encoder_attention_heads", self.conv_dim, self.encoder_attention_heads),
            ("interaction_dim / interaction_heads", self.interaction_dim, self.interaction_heads),
            ("hidden_dim / decoder_attention_heads", self.hidden_dim, self.decoder_attention_heads),
        ):
            if heads < 1 or dim % heads:
                problems.append(f"{name} must divide evenly, got {dim} / {heads}")
        if self.conv_dim % self.norm_num_groups:
            problems.append(
                f"conv_dim ({self.conv_dim}) must be a multiple of norm_num_groups ({self.norm_num_groups})"
            )
        if self.hidden_dim % 2 or self.conv_dim % 2:
            problems.append("conv_dim and hidden_dim must be even (sine position embeddings)")
        if len(self.pixel_mean) != self.num_channels or len(self.pixel_std) != self.num_channels:
            problems.append("pixel_mean and pixel_std need one value per input channel")
        if self.size_divisibility < 1:
            problems.append(f"size_divisibility must be >= 1, got {self.size_divisibility}")
        if problems:
            raise ValueError("Invalid FreeSegConfig: " + "; ".join(problems) + ".")
