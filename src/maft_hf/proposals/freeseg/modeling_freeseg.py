"""FreeSeg, the proposal generator of the released MAFT models, in pure PyTorch (inference forward; `docs/freeseg.md`).

DeepLab ResNet backbone (frozen batch norms) -> Mask2Former's MSDeformAttn pixel decoder (plus one FPN level) ->
text interaction (each map attends to the K + 1 text embeddings) -> Mask2Former's masked-attention decoder, whose
per-query class embedding is compared with the text embeddings (cosine x `logit_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.models.detr.modeling_detr import DetrMLPPredictionHead  # `layers.{i}`, ReLU between them
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerSinePositionEmbedding,
)
from transformers.utils import ModelOutput

from .configuration_freeseg import FreeSegConfig

_INTERACTION_CHUNK = 16384  # pixel tokens attending to the text at once (exact: tokens are independent)


class FreeSegFrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (detectron2's `FrozenBatchNorm2d`), all buffers."""

    defaults = (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0))

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, value in self.defaults:
            self.register_buffer(name, torch.full((num_features,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class FreeSegConvNorm(nn.Conv2d):
    """A convolution followed by an optional norm (`.norm`) and ReLU, laid out as detectron2's `Conv2d`."""

    def __init__(self, *args, norm: nn.Module | None = None, activation: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.activation else x


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, eps: float, **kwargs) -> FreeSegConvNorm:
    """A bias-free convolution followed by a frozen batch norm."""
    norm = FreeSegFrozenBatchNorm2d(out_channels, eps)
    return FreeSegConvNorm(in_channels, out_channels, kernel_size, bias=False, norm=norm, **kwargs)


class FreeSegDeepLabStem(nn.Module):
    """Three 3x3 convolutions (stride 2, 1, 1; widths C/2, C/2, C) with ReLU, then a 3x3 max-pool of stride 2."""

    def __init__(self, config: FreeSegConfig):
        super().__init__()
        half, out, eps = config.stem_out_channels // 2, config.stem_out_channels, config.norm_eps
        self.conv1 = _conv_bn(config.num_channels, half, 3, eps, stride=2, padding=1, activation=True)
        self.conv2 = _conv_bn(half, half, 3, eps, padding=1, activation=True)
        self.conv3 = _conv_bn(half, out, 3, eps, padding=1, activation=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv3(self.conv2(self.conv1(x))), kernel_size=3, stride=2, padding=1)


class FreeSegBottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 dilated, 1x1) with a projection shortcut when the width changes."""

    def __init__(self, in_channels, out_channels, bottleneck, stride, dilation, config: FreeSegConfig):
        super().__init__()
        eps = config.norm_eps
        stride_1x1, stride_3x3 = (stride, 1) if config.stride_in_1x1 else (1, stride)
        self.shortcut = (
            _conv_bn(in_channels, out_channels, 1, eps, stride=stride) if in_channels != out_channels else None
        )
        self.conv1 = _conv_bn(in_channels, bottleneck, 1, eps, stride=stride_1x1, activation=True)
        dilated = dict(padding=dilation, dilation=dilation, groups=config.num_groups, activation=True)
        self.conv2 = _conv_bn(bottleneck, bottleneck, 3, eps, stride=stride_3x3, **dilated)
        self.conv3 = _conv_bn(bottleneck, out_channels, 1, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class FreeSegBackbone(nn.Module):
    """detectron2's `build_resnet_deeplab_backbone`: `stem`, `res2`..`res5` (each an `nn.Sequential` of blocks)."""

    stage_names = ("res2", "res3", "res4", "res5")

    def __init__(self, config: FreeSegConfig):
        super().__init__()
        self.stem = FreeSegDeepLabStem(config)
        in_channels, out_channels = config.stem_out_channels, config.res2_out_channels
        bottleneck = config.num_groups * config.width_per_group
        self.out_channels = []
        for index, (name, depth) in enumerate(zip(self.stage_names, config.depths)):
            dilation = (1, 1, config.res4_dilation, config.res5_dilation)[index]
            stride = 1 if index == 0 or dilation > 1 else 2
            blocks = []
            for grid in config.res5_multi_grid if name == "res5" else [1] * depth:
                blocks.append(FreeSegBottleneck(in_channels, out_channels, bottleneck, stride, dilation * grid, config))
                in_channels, stride = out_channels, 1
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels.append(out_channels)
            out_channels, bottleneck = out_channels * 2, bottleneck * 2

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(pixel_values)
        features = {}
        for name in self.stage_names:
            x = features[name] = getattr(self, name)(x)
        return features


class FreeSegEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN layer (Mask2Former's `MSDeformAttnTransformerEncoderLayer`)."""

    def __init__(self, config: FreeSegConfig, num_levels: int):
        super().__init__()
        dim, heads, points = config.conv_dim, config.encoder_attention_heads, config.encoder_n_points
        self.self_attn = Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(dim, heads, num_levels, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, config.encoder_ffn_dim)
        self.linear2 = nn.Linear(config.encoder_ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, hidden, position, reference_points, spatial_shapes):
        attended, _ = self.self_attn(
            hidden_states=hidden,
            encoder_hidden_states=hidden,
            position_embeddings=position,
            reference_points=reference_points,
            spatial_shapes_list=spatial_shapes,
        )
        hidden = self.norm1(hidden + attended)
        return self.norm2(hidden + self.linear2(F.relu(self.linear1(hidden))))


class FreeSegPixelDecoder(nn.Module):
    """Mask2Former's `MSDeformAttnPixelDecoder`: encoder on res3..res5, one FPN level on res2 (the release's
    `adapter_1` / `layer_1`), 1x1 mask-feature conv. Returns the mask features and the three encoder maps."""

    encoder_features = ("res5", "res4", "res3")  # from low to high resolution

    def __init__(self, config: FreeSegConfig, backbone_channels: list[int]):
        super().__init__()
        dim, groups = config.conv_dim, config.norm_num_groups
        channels = dict(zip(FreeSegBackbone.stage_names, backbone_channels))
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[name], dim, kernel_size=1), nn.GroupNorm(groups, dim))
            for name in self.encoder_features
        )
        num_levels = len(self.encoder_features)
        self.level_embed = nn.Parameter(torch.zeros(num_levels, dim))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            FreeSegEncoderLayer(config, num_levels) for _ in range(config.encoder_layers)
        )
        self.position_embedding = Mask2FormerSinePositionEmbedding(num_position_features=dim // 2, normalize=True)
        self.mask_features = nn.Conv2d(dim, config.mask_dim, kernel_size=1)
        lateral = FreeSegConvNorm(channels["res2"], dim, 1, bias=False, norm=nn.GroupNorm(groups, dim))
        self.lateral_convs = nn.ModuleList([lateral])
        output = FreeSegConvNorm(dim, dim, 3, padding=1, bias=False, norm=nn.GroupNorm(groups, dim), activation=True)
        self.output_convs = nn.ModuleList([output])

    def forward(self, features: dict[str, torch.Tensor]):
        sources, positions, shapes = [], [], []
        for level, name in enumerate(self.encoder_features):
            x = features[name].float()
            source = self.input_proj[level](x)
            shapes.append(tuple(source.shape[-2:]))
            sources.append(source.flatten(2).transpose(1, 2))
            position = self.position_embedding(x.shape, x.device, torch.float32).flatten(2).transpose(1, 2)
            positions.append(position + self.level_embed[level].view(1, 1, -1))
        hidden, position = torch.cat(sources, 1), torch.cat(positions, 1)
        points = []  # the normalised pixel centres (x, y) of every level (no padding masks)
        for height, width in shapes:
            centre_y = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=hidden.device) / height
            centre_x = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=hidden.device) / width
            ref_y, ref_x = torch.meshgrid(centre_y, centre_x, indexing="ij")
            points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        reference_points = torch.cat(points)[None, :, None].expand(hidden.shape[0], -1, len(shapes), -1)
        for layer in self.encoder.layers:
            hidden = layer(hidden, position, reference_points, shapes)
        parts = hidden.split([h * w for h, w in shapes], dim=1)
        outputs = [part.transpose(1, 2).reshape(hidden.shape[0], -1, *shape) for part, shape in zip(parts, shapes)]
        lateral = self.lateral_convs[0](features["res2"].float())
        merged = lateral + F.interpolate(outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_features(self.output_convs[0](merged)), outputs


class FreeSegTextAttention(nn.Module):
    """Multi-head attention of pixel tokens (queries) on text embeddings (keys = values), the release's
    `MultiHeadAttention` (query scaled before the product, no mask)."""

    def __init__(self, q_dim: int, k_dim: int, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(q_dim, embed_dim)
        self.k_proj = nn.Linear(k_dim, embed_dim)
        self.v_proj = nn.Linear(k_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, q_dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, length, _ = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        keys = self.k_proj(key).view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, h, T, d)
        values = self.v_proj(value).view(batch, -1, heads, head_dim).transpose(1, 2)
        chunks = []
        for start in range(0, length, _INTERACTION_CHUNK):
            q = self.q_proj(query[:, start : start + _INTERACTION_CHUNK]) * self.scale
            weights = torch.matmul(q.view(batch, -1, heads, head_dim).transpose(1, 2), keys.transpose(-1, -2))
            attended = torch.matmul(weights.softmax(-1), values).transpose(1, 2).reshape(batch, -1, heads * head_dim)
            chunks.append(self.out_proj(attended))
        return torch.cat(chunks, 1)


class FreeSegContextInteraction(nn.Module):
    """The release's `ContextInteraction`: the three multi-scale maps and the mask features, in that order, attend to
    the text embeddings; each map becomes `LN_q(map) + gamma * attention`. As released, the key LayerNorm is
    re-applied at each pass (the n-th map sees the text normalised n times)."""

    def __init__(self, config: FreeSegConfig):
        super().__init__()
        dim = config.conv_dim
        self.layer_norm_q_1 = nn.LayerNorm(dim)
        self.layer_norm_k_1 = nn.LayerNorm(config.text_dim)
        self.attn = FreeSegTextAttention(dim, config.text_dim, config.interaction_dim, config.interaction_heads)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1)) if config.interaction_layer_scale else None

    def forward(self, mask_features: torch.Tensor, multi_scale: list[torch.Tensor], text_features: torch.Tensor):
        batch = mask_features.shape[0]
        keys = text_features.expand(batch, -1, -1)
        outputs = []
        for features in [*multi_scale, mask_features]:
            query = self.layer_norm_q_1(features.flatten(2).transpose(1, 2))
            keys = self.layer_norm_k_1(keys)
            delta = self.attn(query, keys, keys)
            query = query + (delta if self.gamma is None else self.gamma * delta)
            outputs.append(query.transpose(1, 2).reshape(features.shape))
        return outputs[-1], outputs[:-1]


class FreeSegResidualLayer(nn.Module):
    """A decoder sublayer `f` with its residual and LayerNorm: `norm(x + f(x))`, or `x + f(norm(x))` if `pre_norm`."""

    def __init__(self, dim: int, pre_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def residual(self, target: torch.Tensor, sublayer) -> torch.Tensor:
        if self.pre_norm:
            return target + sublayer(self.norm(target))
        return self.norm(target + sublayer(target))


class FreeSegSelfAttentionLayer(FreeSegResidualLayer):
    def __init__(self, dim: int, heads: int, pre_norm: bool):
        super().__init__(dim, pre_norm)
        self.self_attn = nn.MultiheadAttention(dim, heads)

    def forward(self, target, query_pos):
        return self.residual(target, lambda x: self.self_attn(x + query_pos, x + query_pos, value=x)[0])


class FreeSegCrossAttentionLayer(FreeSegResidualLayer):
    def __init__(self, dim: int, heads: int, pre_norm: bool):
        super().__init__(dim, pre_norm)
        self.multihead_attn = nn.MultiheadAttention(dim, heads)

    def forward(self, target, memory, memory_mask, pos, query_pos):
        key = memory + pos
        return self.residual(
            target, lambda x: self.multihead_attn(x + query_pos, key, memory, attn_mask=memory_mask)[0]
        )


class FreeSegFFNLayer(FreeSegResidualLayer):
    def __init__(self, dim: int, ffn_dim: int, pre_norm: bool):
        super().__init__(dim, pre_norm)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)

    def forward(self, target):
        return self.residual(target, lambda x: self.linear2(F.relu(self.linear1(x))))


class FreeSegPredictor(nn.Module):
    """The release's `OpenTransformerPredictor`: Mask2Former's masked-attention decoder whose class head is an MLP
    to a `text_dim` class embedding. All `decoder_layers` layers run (the release does not subtract one)."""

    def __init__(self, config: FreeSegConfig):
        super().__init__()
        dim, heads, pre_norm = config.hidden_dim, config.decoder_attention_heads, config.pre_norm
        self.num_heads = heads
        self.num_feature_levels = 3
        self.position_embedding = Mask2FormerSinePositionEmbedding(num_position_features=dim // 2, normalize=True)
        layers = range(config.decoder_layers)
        self.transformer_self_attention_layers = nn.ModuleList(
            FreeSegSelfAttentionLayer(dim, heads, pre_norm) for _ in layers
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            FreeSegCrossAttentionLayer(dim, heads, pre_norm) for _ in layers
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FreeSegFFNLayer(dim, config.decoder_ffn_dim, pre_norm) for _ in layers
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(config.num_queries, dim)
        self.query_embed = nn.Embedding(config.num_queries, dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, dim)
        project = config.conv_dim != dim or config.enforce_input_proj
        self.input_proj = nn.ModuleList(
            nn.Conv2d(config.conv_dim, dim, kernel_size=1) if project else nn.Identity()
            for _ in range(self.num_feature_levels)
        )
        self.class_embed = DetrMLPPredictionHead(
            dim, config.class_embed_hidden_dim, config.text_dim, config.class_embed_layers
        )
        self.mask_embed = DetrMLPPredictionHead(dim, dim, config.mask_dim, 3)

    def _heads(self, output, mask_features, target_size, with_class: bool):
        decoded = self.decoder_norm(output).transpose(0, 1)  # (B, Q, C)
        class_embeddings = self.class_embed(decoded) if with_class else None
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        if target_size is None:  # after the last layer
            return class_embeddings, mask_logits, None
        resized = F.interpolate(mask_logits, size=target_size, mode="bilinear", align_corners=False)
        attn_mask = resized.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1) < 0.5
        return class_embeddings, mask_logits, attn_mask

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor):
        sources, positions, sizes = [], [], []
        for level, x in enumerate(multi_scale[: self.num_feature_levels]):
            sizes.append(tuple(x.shape[-2:]))
            positions.append(self.position_embedding(x.shape, x.device, torch.float32).flatten(2).permute(2, 0, 1))
            source = self.input_proj[level](x).flatten(2) + self.level_embed.weight[level][None, :, None]
            sources.append(source.permute(2, 0, 1))
        batch = sources[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)
        num_layers = len(self.transformer_ffn_layers)
        class_embeddings, mask_logits, attn_mask = self._heads(output, mask_features, sizes[0], num_layers == 0)
        layers = zip(
            self.transformer_cross_attention_layers, self.transformer_self_attention_layers, self.transformer_ffn_layers
        )
        for index, (cross_attention, self_attention, ffn) in enumerate(layers):
            level = index % self.num_feature_levels
            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False  # no all-masked rows
            output = cross_attention(output, sources[level], attn_mask, positions[level], query_pos)
            output = ffn(self_attention(output, query_pos))
            last = index == num_layers - 1
            target = None if last else sizes[(index + 1) % self.num_feature_levels]
            class_embeddings, mask_logits, attn_mask = self._heads(output, mask_features, target, with_class=last)
        return class_embeddings, mask_logits


@dataclass
class FreeSegOutput(ModelOutput):
    """`mask_logits (B, Q, Hp/4, Wp/4)`, `class_logits (B, Q, K + 1)` (void last) and the queries' (unnormalised)
    `class_embeddings (B, Q, text_dim)`."""

    mask_logits: torch.FloatTensor | None = None
    class_logits: torch.FloatTensor | None = None
    class_embeddings: torch.FloatTensor | None = None


class FreeSegModel(PreTrainedModel):
    """The FreeSeg generator: `forward(pixel_values, text_features)` -> mask logits and class logits."""

    config_class = FreeSegConfig
    config: FreeSegConfig
    base_model_prefix = "freeseg"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")

    def __init__(self, config: FreeSegConfig):
        super().__init__(config)
        self.backbone = FreeSegBackbone(config)
        self.pixel_decoder = FreeSegPixelDecoder(config, self.backbone.out_channels)
        self.interaction = FreeSegContextInteraction(config)
        self.predictor = FreeSegPredictor(config)
        self.void_embedding = nn.Parameter(torch.zeros(1, config.text_dim))  # the release's non_object_embedding
        self.post_init()

    def _init_weights(self, module: nn.Module):
        if isinstance(module, FreeSegFrozenBatchNorm2d):
            for name, value in FreeSegFrozenBatchNorm2d.defaults:
                init.constant_(getattr(module, name), value)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
            heads, levels, points = module.n_heads, module.n_levels, module.n_points
            thetas = torch.arange(heads, dtype=torch.float32) * (2.0 * torch.pi / heads)
            grid = torch.stack([thetas.cos(), thetas.sin()], -1)
            grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(heads, 1, 1, 2).repeat(1, levels, points, 1)
            grid = grid * torch.arange(1, points + 1, dtype=torch.float32).view(1, 1, -1, 1)
            init.copy_(module.sampling_offsets.bias, grid.reshape(-1))
            init.zeros_(module.sampling_offsets.weight)
            init.zeros_(module.attention_weights.weight)
            init.zeros_(module.attention_weights.bias)
            for projection in (module.value_proj, module.output_proj):
                init.xavier_uniform_(projection.weight)
                init.zeros_(projection.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, FreeSegPixelDecoder):
            init.normal_(module.level_embed, std=1.0)
        elif isinstance(module, FreeSegContextInteraction) and module.gamma is not None:
            init.constant_(module.gamma, 0.1)
        elif isinstance(module, FreeSegModel):
            init.normal_(module.void_embedding, std=self.config.text_dim**-0.5)
        else:
            super()._init_weights(module)

    def text_features_with_void(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """`(K, D)` class embeddings (e.g. a `text_classifier`) -> `(K + 1, D)`: each row L2-normalised, the
        normalised void embedding last (the release's `MaskFormerClipAdapter.get_text_features`)."""
        dim = self.config.text_dim
        if not torch.is_tensor(class_embeddings) or class_embeddings.ndim != 2 or class_embeddings.shape[1] != dim:
            shape = tuple(getattr(class_embeddings, "shape", ()))
            raise ValueError(f"The class embeddings (text_classifier) must be a (K, {dim}) tensor, got {shape}.")
        void = self.void_embedding / self.void_embedding.norm(dim=-1, keepdim=True)
        return torch.cat([F.normalize(class_embeddings.to(void), dim=-1), void], dim=0)

    def forward(self, pixel_values: torch.Tensor, text_features: torch.Tensor, return_dict: bool = True):
        """`pixel_values (B, 3, Hp, Wp)` normalised with `config.pixel_mean/std` (0-255 scale), zero-padded to a
        multiple of `size_divisibility`; `text_features (K + 1, text_dim)` from [`text_features_with_void`]."""
        if pixel_values.ndim != 4 or text_features.ndim != 2 or text_features.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"Expected pixel_values (B, 3, Hp, Wp) and text_features (K + 1, {self.config.text_dim}), got "
                f"{tuple(pixel_values.shape)} and {tuple(text_features.shape)}."
            )
        mask_features, multi_scale = self.pixel_decoder(self.backbone(pixel_values))
        text_features = text_features.to(mask_features)
        mask_features, multi_scale = self.interaction(mask_features, multi_scale, text_features)
        class_embeddings, mask_logits = self.predictor(multi_scale, mask_features)
        normalized = class_embeddings / class_embeddings.norm(dim=-1, keepdim=True)
        class_logits = self.config.logit_scale * normalized.matmul(text_features.transpose(-1, -2))
        if not return_dict:
            return mask_logits, class_logits, class_embeddings
        return FreeSegOutput(mask_logits=mask_logits, class_logits=class_logits, class_embeddings=class_embeddings)
