"""FreeSeg, the proposal generator of the released MAFT models, in pure PyTorch (inference forward).

DeepLab ResNet backbone (frozen batch norms) -> Mask2Former's MSDeformAttn pixel decoder (plus one FPN level) ->
text interaction (each map attends to the K + 1 text embeddings; as released, the key LayerNorm is re-applied at
every pass) -> Mask2Former's masked-attention decoder (all `decoder_layers` run), whose per-query class embedding is
compared with the text embeddings (cosine x `logit_scale`). Deformable attention and sine position embeddings are
transformers' Mask2Former blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerSinePositionEmbedding,
)
from transformers.utils import ModelOutput

from .configuration_freeseg import FreeSegConfig

_INTERACTION_CHUNK = 16384  # pixel tokens attending to the text at once (exact: tokens are independent)


class FreeSegFrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (detectron2's `FrozenBatchNorm2d`), all buffers."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class FreeSegConvNorm(nn.Conv2d):
    """A convolution followed by an optional norm (`.norm`) and activation, laid out as detectron2's `Conv2d`."""

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
        self.conv1 = _conv_bn(config.num_channels, half, 3, eps, stride=2, padding=1)
        self.conv2 = _conv_bn(half, half, 3, eps, padding=1)
        self.conv3 = _conv_bn(half, out, 3, eps, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class FreeSegBottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 dilated, 1x1) with a projection shortcut when the width changes."""

    def __init__(self, in_channels, out_channels, bottleneck, stride, dilation, groups, stride_in_1x1, eps):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = _conv_bn(in_channels, out_channels, 1, eps, stride=stride)
        self.conv1 = _conv_bn(in_channels, bottleneck, 1, eps, stride=stride_1x1)
        self.conv2 = _conv_bn(
            bottleneck, bottleneck, 3, eps, stride=stride_3x3, padding=dilation, dilation=dilation, groups=groups
        )
        self.conv3 = _conv_bn(bottleneck, out_channels, 1, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut)


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
            dilation = {"res4": config.res4_dilation, "res5": config.res5_dilation}.get(name, 1)
            first_stride = 1 if index == 0 or dilation > 1 else 2
            if name == "res5":
                dilations = [dilation * grid for grid in config.res5_multi_grid]
            else:
                dilations = [dilation] * depth
            options = (config.num_groups, config.stride_in_1x1, config.norm_eps)
            blocks = [
                FreeSegBottleneck(in_channels, out_channels, bottleneck, first_stride, dilations[0], *options)
            ] + [FreeSegBottleneck(out_channels, out_channels, bottleneck, 1, d, *options) for d in dilations[1:depth]]
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels.append(out_channels)
            in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(pixel_values)
        features = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            features[name] = x
        return features


class FreeSegEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN layer (Mask2Former's `MSDeformAttnTransformerEncoderLayer`)."""

    def __init__(self, config: FreeSegConfig, num_levels: int):
        super().__init__()
        dim = config.conv_dim
        self.self_attn = Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(
            embed_dim=dim,
            num_heads=config.encoder_attention_heads,
            n_levels=num_levels,
            n_points=config.encoder_n_points,
        )
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


def encoder_reference_points(spatial_shapes, batch_size: int, num_levels: int, device) -> torch.Tensor:
    """Normalised pixel centres of every level, `(B, sum(h*w), num_levels, 2)` as (x, y) (no padding masks)."""
    points = []
    for height, width in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
            torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / width, ref_y.reshape(-1) / height), -1))
    points = torch.cat(points, 0)
    return points[None, :, None].expand(batch_size, -1, num_levels, -1)


class FreeSegPixelDecoder(nn.Module):
    """Mask2Former's `MSDeformAttnPixelDecoder` (encoder on res3..res5, FPN on res2, 1x1 mask-feature conv)."""

    encoder_features = ("res3", "res4", "res5")
    fpn_features = ("res2",)

    def __init__(self, config: FreeSegConfig, backbone_channels: list[int]):
        super().__init__()
        dim, groups = config.conv_dim, config.norm_num_groups
        channels = dict(zip(FreeSegBackbone.stage_names, backbone_channels))
        # from low to high resolution: res5, res4, res3
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[name], dim, kernel_size=1), nn.GroupNorm(groups, dim))
            for name in self.encoder_features[::-1]
        )
        num_levels = len(self.encoder_features)
        self.level_embed = nn.Parameter(torch.zeros(num_levels, dim))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            FreeSegEncoderLayer(config, num_levels) for _ in range(config.encoder_layers)
        )
        self.position_embedding = Mask2FormerSinePositionEmbedding(num_position_features=dim // 2, normalize=True)
        self.mask_features = nn.Conv2d(dim, config.mask_dim, kernel_size=1)
        # one entry per FPN feature, in backbone order (res2 first), as the release's adapter_1 / layer_1
        self.lateral_convs = nn.ModuleList(
            FreeSegConvNorm(channels[name], dim, 1, bias=False, norm=nn.GroupNorm(groups, dim))
            for name in self.fpn_features
        )
        self.output_convs = nn.ModuleList(
            FreeSegConvNorm(dim, dim, 3, padding=1, bias=False, norm=nn.GroupNorm(groups, dim), activation=True)
            for _ in self.fpn_features
        )
        self.num_output_levels = 3

    def forward(self, features: dict[str, torch.Tensor]):
        sources, positions, shapes = [], [], []
        for level, name in enumerate(self.encoder_features[::-1]):
            x = features[name].float()
            source = self.input_proj[level](x)
            batch, dim, height, width = source.shape
            position = self.position_embedding(x.shape, x.device, torch.float32)
            shapes.append((height, width))
            sources.append(source.flatten(2).transpose(1, 2))
            positions.append(position.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
        hidden = torch.cat(sources, 1)
        position = torch.cat(positions, 1)
        reference_points = encoder_reference_points(shapes, hidden.shape[0], len(shapes), hidden.device)
        for layer in self.encoder.layers:
            hidden = layer(hidden, position, reference_points, shapes)

        outputs = []
        for level, part in enumerate(hidden.split([h * w for h, w in shapes], dim=1)):
            outputs.append(part.transpose(1, 2).reshape(hidden.shape[0], -1, *shapes[level]))
        for index in reversed(range(len(self.fpn_features))):  # from low to high resolution
            lateral = self.lateral_convs[index](features[self.fpn_features[index]].float())
            merged = lateral + F.interpolate(outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(self.output_convs[index](merged))
        return self.mask_features(outputs[-1]), outputs[: self.num_output_levels]


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
            q = (self.q_proj(query[:, start : start + _INTERACTION_CHUNK]) * self.scale).view(
                batch, -1, heads, head_dim
            )
            weights = torch.matmul(q.transpose(1, 2), keys.transpose(-1, -2)).softmax(-1)
            attended = torch.matmul(weights, values).transpose(1, 2).reshape(batch, -1, heads * head_dim)
            chunks.append(self.out_proj(attended))
        return torch.cat(chunks, 1)


class FreeSegContextInteraction(nn.Module):
    """The release's `ContextInteraction`: the three multi-scale maps and the mask features, in that order, attend to
    the text embeddings; each map becomes `LN_q(map) + gamma * attention`. The key LayerNorm is re-applied at each
    pass (the n-th map sees the text normalised n times), exactly as released."""

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
            _, _, height, width = features.shape
            query = self.layer_norm_q_1(features.flatten(2).transpose(1, 2))
            keys = self.layer_norm_k_1(keys)
            delta = self.attn(query, keys, keys)
            query = query + (delta if self.gamma is None else self.gamma * delta)
            outputs.append(query.transpose(1, 2).reshape(batch, -1, height, width))
        return outputs[-1], outputs[:-1]


class FreeSegSelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, pre_norm: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, target, query_pos):
        if self.pre_norm:
            normed = self.norm(target)
            q = normed + query_pos
            return target + self.self_attn(q, q, value=normed)[0]
        q = target + query_pos
        return self.norm(target + self.self_attn(q, q, value=target)[0])


class FreeSegCrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, pre_norm: bool):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, target, memory, memory_mask, pos, query_pos):
        query = self.norm(target) if self.pre_norm else target
        attended = self.multihead_attn(query=query + query_pos, key=memory + pos, value=memory, attn_mask=memory_mask)[
            0
        ]
        return target + attended if self.pre_norm else self.norm(target + attended)


class FreeSegFFNLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, pre_norm: bool):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, target):
        if self.pre_norm:
            return target + self.linear2(F.relu(self.linear1(self.norm(target))))
        return self.norm(target + self.linear2(F.relu(self.linear1(target))))


class FreeSegMLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (`layers.{i}`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else F.relu(layer(x))
        return x


class FreeSegPredictor(nn.Module):
    """The release's `OpenTransformerPredictor`: Mask2Former's masked-attention decoder whose class head is an MLP
    to a `text_dim` class embedding. All `decoder_layers` layers run (the release does not subtract one)."""

    def __init__(self, config: FreeSegConfig):
        super().__init__()
        dim, heads = config.hidden_dim, config.decoder_attention_heads
        self.num_heads = heads
        self.num_feature_levels = 3
        self.position_embedding = Mask2FormerSinePositionEmbedding(num_position_features=dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            FreeSegSelfAttentionLayer(dim, heads, config.pre_norm) for _ in range(config.decoder_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            FreeSegCrossAttentionLayer(dim, heads, config.pre_norm) for _ in range(config.decoder_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FreeSegFFNLayer(dim, config.decoder_ffn_dim, config.pre_norm) for _ in range(config.decoder_layers)
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
        self.class_embed = FreeSegMLP(dim, config.class_embed_hidden_dim, config.text_dim, config.class_embed_layers)
        self.mask_embed = FreeSegMLP(dim, dim, config.mask_dim, 3)

    def _heads(self, output, mask_features, target_size, with_class: bool):
        decoded = self.decoder_norm(output).transpose(0, 1)  # (B, Q, C)
        class_embeddings = self.class_embed(decoded) if with_class else None
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        attn_mask = None
        if target_size is not None:
            resized = F.interpolate(mask_logits, size=target_size, mode="bilinear", align_corners=False)
            attn_mask = resized.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1) < 0.5
        return class_embeddings, mask_logits, attn_mask

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor):
        sources, positions, sizes = [], [], []
        for level in range(self.num_feature_levels):
            x = multi_scale[level]
            sizes.append(tuple(x.shape[-2:]))
            positions.append(self.position_embedding(x.shape, x.device, torch.float32).flatten(2).permute(2, 0, 1))
            source = self.input_proj[level](x).flatten(2) + self.level_embed.weight[level][None, :, None]
            sources.append(source.permute(2, 0, 1))
        batch = sources[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)
        num_layers = len(self.transformer_ffn_layers)
        _, mask_logits, attn_mask = self._heads(output, mask_features, sizes[0], with_class=num_layers == 0)
        class_embeddings = None
        for index in range(num_layers):
            level = index % self.num_feature_levels
            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
            output = self.transformer_cross_attention_layers[index](
                output, sources[level], attn_mask, positions[level], query_pos
            )
            output = self.transformer_self_attention_layers[index](output, query_pos)
            output = self.transformer_ffn_layers[index](output)
            last = index == num_layers - 1
            target = None if last else sizes[(index + 1) % self.num_feature_levels]
            class_embeddings, mask_logits, attn_mask = self._heads(output, mask_features, target, with_class=last)
        if class_embeddings is None:
            class_embeddings = self.class_embed(self.decoder_norm(output).transpose(0, 1))
        return class_embeddings, mask_logits


@dataclass
class FreeSegOutput(ModelOutput):
    """`mask_logits (B, Q, Hp/4, Wp/4)`, `class_logits (B, Q, K + 1)` (void last) and the queries' (unnormalised)
    `class_embeddings (B, Q, text_dim)`."""

    mask_logits: torch.FloatTensor | None = None
    class_logits: torch.FloatTensor | None = None
    class_embeddings: torch.FloatTensor | None = None


class FreeSegPreTrainedModel(PreTrainedModel):
    config_class = FreeSegConfig
    config: FreeSegConfig
    base_model_prefix = "freeseg"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")

    def _init_weights(self, module: nn.Module):
        if isinstance(module, FreeSegFrozenBatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
            init.constant_(module.sampling_offsets.weight, 0.0)
            thetas = torch.arange(module.n_heads, dtype=torch.float32) * (2.0 * torch.pi / module.n_heads)
            grid = torch.stack([thetas.cos(), thetas.sin()], -1)
            grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(module.n_heads, 1, 1, 2)
            grid = grid.repeat(1, module.n_levels, module.n_points, 1)
            grid = grid * torch.arange(1, module.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
            init.copy_(module.sampling_offsets.bias, grid.reshape(-1))
            init.constant_(module.attention_weights.weight, 0.0)
            init.constant_(module.attention_weights.bias, 0.0)
            init.xavier_uniform_(module.value_proj.weight)
            init.constant_(module.value_proj.bias, 0.0)
            init.xavier_uniform_(module.output_proj.weight)
            init.constant_(module.output_proj.bias, 0.0)
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


class FreeSegModel(FreeSegPreTrainedModel):
    """The FreeSeg generator: `forward(pixel_values, text_features)` -> mask logits and class logits."""

    def __init__(self, config: FreeSegConfig):
        super().__init__(config)
        self.backbone = FreeSegBackbone(config)
        self.pixel_decoder = FreeSegPixelDecoder(config, self.backbone.out_channels)
        self.interaction = FreeSegContextInteraction(config)
        self.predictor = FreeSegPredictor(config)
        self.void_embedding = nn.Parameter(torch.zeros(1, config.text_dim))  # the release's non_object_embedding
        self.post_init()

    def text_features_with_void(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """`(K, D)` class embeddings -> `(K + 1, D)`: each row L2-normalised, the normalised void embedding last
        (the release's `MaskFormerClipAdapter.get_text_features`)."""
        if class_embeddings.ndim != 2 or class_embeddings.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"class_embeddings must be (K, {self.config.text_dim}), got {tuple(class_embeddings.shape)}."
            )
        void = self.void_embedding / self.void_embedding.norm(dim=-1, keepdim=True)
        classes = F.normalize(class_embeddings.to(void), dim=-1)
        return torch.cat([classes, void], dim=0)

    def forward(self, pixel_values: torch.Tensor, text_features: torch.Tensor, return_dict: bool = True):
        """`pixel_values (B, 3, Hp, Wp)` normalised with `config.pixel_mean/std` (0-255 scale), zero-padded to a
        multiple of `size_divisibility`; `text_features (K + 1, text_dim)` from [`text_features_with_void`]."""
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (B, 3, Hp, Wp), got {tuple(pixel_values.shape)}.")
        if text_features.ndim != 2 or text_features.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"text_features must be (K + 1, {self.config.text_dim}), got {tuple(text_features.shape)}."
            )
        features = self.backbone(pixel_values)
        mask_features, multi_scale = self.pixel_decoder(features)
        text_features = text_features.to(mask_features)
        mask_features, multi_scale = self.interaction(mask_features, multi_scale, text_features)
        class_embeddings, mask_logits = self.predictor(multi_scale, mask_features)
        normalized = class_embeddings / class_embeddings.norm(dim=-1, keepdim=True)
        class_logits = self.config.logit_scale * normalized.matmul(text_features.transpose(-1, -2))
        if not return_dict:
            return mask_logits, class_logits, class_embeddings
        return FreeSegOutput(mask_logits=mask_logits, class_logits=class_logits, class_embeddings=class_embeddings)
