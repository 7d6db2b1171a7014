"""An independent re-implementation of the released FreeSeg generator's inference, for tests only.

Written from the authors' code (FreeSeg as shipped with MAFT: `MAFT.forward`, `MaskFormerInteractionHead`,
`MSDeformAttnPixelDecoder`, `ContextInteraction`, `OpenTransformerPredictor`, detectron2's DeepLab ResNet), keeping
their module structure and attribute names, so that `RefFreeSeg().state_dict()` has the key layout of the released
checkpoint (`backbone.*`, `sem_seg_head.*`, `clip_adapter.non_object_embedding`). Nothing here is shared with
`maft_hf.proposals.freeseg`: deformable attention, position embeddings and frozen batch norm are written out again.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TINY = dict(
    stem_out=16,
    depths=(1, 1, 1, 1),
    res2_out=32,
    width=8,
    multi_grid=(1,),
    res5_dilation=1,
    conv_dim=32,
    gn_groups=8,
    enc_layers=1,
    enc_heads=4,
    enc_points=2,
    enc_ffn=48,
    inter_dim=64,
    inter_heads=4,
    hidden=32,
    dec_layers=3,
    dec_heads=4,
    dec_ffn=64,
    queries=10,
    text_dim=16,
    embed_hidden=24,
    embed_layers=2,
    pixel_mean=(123.675, 116.28, 103.53),
    pixel_std=(58.395, 57.12, 57.375),
    size_divisibility=32,
)

# the released sizes (configs/coco-stuff-164k-156/eval.yaml and its bases)
RELEASED = dict(
    TINY,
    stem_out=128,
    depths=(3, 4, 23, 3),
    res2_out=256,
    width=64,
    multi_grid=(1, 2, 4),
    conv_dim=256,
    gn_groups=32,
    enc_layers=6,
    enc_heads=8,
    enc_points=4,
    enc_ffn=1024,
    inter_dim=2048,
    inter_heads=8,
    hidden=256,
    dec_layers=10,
    dec_heads=8,
    dec_ffn=2048,
    queries=100,
    text_dim=512,
    embed_hidden=1024,
)

# the FreeSegConfig fields that the tensors cannot tell (heads, points) for the TINY reference
TINY_CONFIG_OVERRIDES = dict(
    res5_multi_grid=[1],
    encoder_attention_heads=4,
    interaction_heads=4,
    decoder_attention_heads=4,
    norm_num_groups=8,
)


# ---------------------------------------------------------------------------------------------------------------
# detectron2 layers
# ---------------------------------------------------------------------------------------------------------------
class FrozenBatchNorm2d(nn.Module):
    def __init__(self, n, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n) - eps)

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


class Conv2d(nn.Conv2d):
    def __init__(self, *args, norm=None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x):
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class DeepLabStem(nn.Module):
    def __init__(self, out_channels):
        super().__init__()
        half = out_channels // 2
        self.conv1 = Conv2d(3, half, kernel_size=3, stride=2, padding=1, bias=False, norm=FrozenBatchNorm2d(half))
        self.conv2 = Conv2d(half, half, kernel_size=3, stride=1, padding=1, bias=False, norm=FrozenBatchNorm2d(half))
        self.conv3 = Conv2d(
            half, out_channels, kernel_size=3, padding=1, bias=False, norm=FrozenBatchNorm2d(out_channels)
        )

    def forward(self, x):
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    def __init__(self, in_channels, out_channels, *, bottleneck_channels, stride=1, dilation=1):
        super().__init__()
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                                   norm=FrozenBatchNorm2d(out_channels))  # fmt: skip
        # STRIDE_IN_1X1 False: the stride sits in the 3x3 conv
        self.conv1 = Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=1, bias=False,
                            norm=FrozenBatchNorm2d(bottleneck_channels))  # fmt: skip
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride, padding=dilation,
                            bias=False, dilation=dilation, norm=FrozenBatchNorm2d(bottleneck_channels))  # fmt: skip
        self.conv3 = Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False,
                            norm=FrozenBatchNorm2d(out_channels))  # fmt: skip

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu_(out)


class ResNet(nn.Module):
    """`build_resnet_deeplab_backbone` with RES4_DILATION 1 and the given RES5_DILATION / RES5_MULTI_GRID."""

    def __init__(self, cfg):
        super().__init__()
        self.stem = DeepLabStem(cfg["stem_out"])
        in_channels, out_channels, bottleneck = cfg["stem_out"], cfg["res2_out"], cfg["width"]
        self.names = []
        for idx, stage_idx in enumerate(range(2, 6)):
            dilation = cfg["res5_dilation"] if stage_idx == 5 else 1
            first_stride = 1 if idx == 0 or dilation > 1 else 2
            n = cfg["depths"][idx]
            strides = [first_stride] + [1] * (n - 1)
            dilations = [dilation * g for g in cfg["multi_grid"]] if stage_idx == 5 else [dilation] * n
            blocks = []
            for i in range(n):
                blocks.append(BottleneckBlock(in_channels, out_channels, bottleneck_channels=bottleneck,
                                              stride=strides[i], dilation=dilations[i]))  # fmt: skip
                in_channels = out_channels
            name = f"res{stage_idx}"
            self.add_module(name, nn.Sequential(*blocks))
            self.names.append(name)
            out_channels *= 2
            bottleneck *= 2

    def forward(self, x):
        outputs = {}
        x = self.stem(x)
        for name in self.names:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs


# ---------------------------------------------------------------------------------------------------------------
# MSDeformAttn pixel decoder
# ---------------------------------------------------------------------------------------------------------------
class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats, temperature=10000):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, x):
        not_mask = torch.ones((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def ms_deform_attn_core(value, shapes, sampling_locations, attention_weights):
    """The release's `ms_deform_attn_core_pytorch`, written out again."""
    n, _, heads, d = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = values[level].flatten(2).transpose(1, 2).reshape(n * heads, d, h, w)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, lq, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, heads * d, lq)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    def __init__(self, d_model, n_levels, n_heads, n_points):
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

    def forward(self, query, reference_points, input_flatten, shapes):
        n, lq, _ = query.shape
        _, lin, _ = input_flatten.shape
        value = self.value_proj(input_flatten).view(n, lin, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_core(value, shapes, locations, weights))


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    def __init__(self, d_model, d_ffn, n_levels, n_heads, n_points):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, shapes):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    def __init__(self, d_model, nhead, num_encoder_layers, dim_feedforward, num_feature_levels, enc_n_points):
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(num_feature_levels, d_model))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            MSDeformAttnTransformerEncoderLayer(d_model, dim_feedforward, num_feature_levels, nhead, enc_n_points)
            for _ in range(num_encoder_layers)
        )

    def forward(self, srcs, pos_embeds):
        flat, pos_flat, shapes = [], [], []
        for lvl, (src, pos) in enumerate(zip(srcs, pos_embeds)):
            shapes.append(tuple(src.shape[-2:]))
            flat.append(src.flatten(2).transpose(1, 2))
            pos_flat.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src, pos = torch.cat(flat, 1), torch.cat(pos_flat, 1)
        refs = []
        for h, w in shapes:  # valid ratios are all 1 (no padding mask)
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w), indexing="ij"
            )
            refs.append(torch.stack((ref_x.reshape(-1)[None] / w, ref_y.reshape(-1)[None] / h), -1))
        reference_points = torch.cat(refs, 1)[:, :, None].repeat(src.shape[0], 1, len(shapes), 1)
        for layer in self.encoder.layers:
            src = layer(src, pos, reference_points, shapes)
        return src, shapes


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(self, cfg, channels):  # channels: res2..res5
        super().__init__()
        d, g = cfg["conv_dim"], cfg["gn_groups"]
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(g, d)) for c in channels[1:][::-1]
        )
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d, cfg["enc_heads"], cfg["enc_layers"], cfg["enc_ffn"], 3, cfg["enc_points"]
        )
        self.pe_layer = PositionEmbeddingSine(d // 2)
        self.mask_features = Conv2d(d, d, kernel_size=1)
        self.adapter_1 = Conv2d(channels[0], d, kernel_size=1, bias=False, norm=nn.GroupNorm(g, d))
        self.layer_1 = Conv2d(d, d, kernel_size=3, padding=1, bias=False, norm=nn.GroupNorm(g, d), activation=F.relu)

    def forward_features(self, features):
        srcs, pos = [], []
        for idx, f in enumerate(["res5", "res4", "res3"]):
            x = features[f].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        y, shapes = self.transformer(srcs, pos)
        bs = y.shape[0]
        out = [
            z.transpose(1, 2).view(bs, -1, h, w) for z, (h, w) in zip(y.split([h * w for h, w in shapes], 1), shapes)
        ]
        cur = self.adapter_1(features["res2"].float())
        y = cur + F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
        out.append(self.layer_1(y))
        return self.mask_features(out[-1]), out[0], out[:3]


# ---------------------------------------------------------------------------------------------------------------
# ContextInteraction
# ---------------------------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    def __init__(self, q_dim, k_dim, embed_dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim, self.embed_dim = num_heads, embed_dim // num_heads, embed_dim
        self.scale = self.head_dim ** (-0.5)
        self.q_proj = nn.Linear(q_dim, embed_dim)
        self.k_proj = nn.Linear(k_dim, embed_dim)
        self.v_proj = nn.Linear(k_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, q_dim)

    def _shape(self, t, seq_len, bsz):
        return t.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, q, k, v):
        bsz, tgt_len, _ = q.size()
        query = self._shape(self.q_proj(q) * self.scale, tgt_len, bsz).view(bsz * self.num_heads, -1, self.head_dim)
        key = self._shape(self.k_proj(k), -1, bsz).view(bsz * self.num_heads, -1, self.head_dim)
        value = self._shape(self.v_proj(v), -1, bsz).view(bsz * self.num_heads, -1, self.head_dim)
        attn = torch.bmm(query, key.transpose(1, 2)).softmax(-1)
        out = torch.bmm(attn, value).view(bsz, self.num_heads, tgt_len, self.head_dim).transpose(1, 2)
        return self.out_proj(out.reshape(bsz, tgt_len, self.embed_dim))


class ContextInteraction(nn.Module):
    def __init__(self, q_dim, k_dim, embed_dim, num_heads):
        super().__init__()
        self.layer_norm_q_1 = nn.LayerNorm(q_dim)
        self.layer_norm_k_1 = nn.LayerNorm(k_dim)
        self.attn = MultiHeadAttention(q_dim, k_dim, embed_dim, num_heads)
        self.gamma = nn.Parameter(0.1 * torch.ones(q_dim))

    def forward(self, mask_features, multi_scale_features, text_feat):
        bs = mask_features.shape[0]
        k = text_feat.expand(bs, text_feat.shape[0], text_feat.shape[1])
        v = text_feat.expand(bs, text_feat.shape[0], text_feat.shape[1])
        output = []
        for q in [*multi_scale_features, mask_features]:
            bs, _, h, w = q.shape
            q = self.layer_norm_q_1(q.flatten(2).transpose(1, 2))
            k, v = self.layer_norm_k_1(k), self.layer_norm_k_1(v)  # re-applied at every pass, as released
            q = q + self.gamma * self.attn(q, k, v)
            output.append(q.transpose(1, 2).contiguous().view(bs, -1, h, w))
        return output[3], output[:3]


# ---------------------------------------------------------------------------------------------------------------
# OpenTransformerPredictor
# ---------------------------------------------------------------------------------------------------------------
class SelfAttentionLayer(nn.Module):
    def __init__(self, d, nhead):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, nhead)
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt, query_pos):
        q = k = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, k, value=tgt)[0])


class CrossAttentionLayer(nn.Module):
    def __init__(self, d, nhead):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d, nhead)
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt, memory, memory_mask, pos, query_pos):
        tgt2 = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory, attn_mask=memory_mask)[0]
        return self.norm(tgt + tgt2)


class FFNLayer(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.linear1 = nn.Linear(d, ffn)
        self.linear2 = nn.Linear(ffn, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt):
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class OpenTransformerPredictor(nn.Module):
    def __init__(self, cfg, in_channels):
        super().__init__()
        d, nh = cfg["hidden"], cfg["dec_heads"]
        self.pe_layer = PositionEmbeddingSine(d // 2)
        self.num_heads = nh
        self.num_layers = cfg["dec_layers"]  # DEC_LAYERS itself: OpenTransformerPredictor does not subtract 1
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(d, nh) for _ in range(self.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(d, nh) for _ in range(self.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(d, cfg["dec_ffn"]) for _ in range(self.num_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.query_feat = nn.Embedding(cfg["queries"], d)
        self.query_embed = nn.Embedding(cfg["queries"], d)
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(3, d)
        self.input_proj = nn.ModuleList(
            Conv2d(in_channels, d, kernel_size=1) if in_channels != d else nn.Sequential() for _ in range(3)
        )
        self.class_embed = MLP(d, cfg["embed_hidden"], cfg["text_dim"], cfg["embed_layers"])
        self.mask_embed = MLP(d, d, d, 3)

    def forward(self, x, mask_features):
        src, pos, size_list = [], [], []
        for i in range(3):
            size_list.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i]).flatten(2).permute(2, 0, 1))
            src.append(
                (self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1)
            )
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)
        outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(output, mask_features, size_list[0])
        for i in range(self.num_layers):
            level_index = i % 3
            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
            output = self.transformer_cross_attention_layers[i](output, src[level_index], attn_mask, pos[level_index],
                                                                query_embed)  # fmt: skip
            output = self.transformer_self_attention_layers[i](output, query_embed)
            output = self.transformer_ffn_layers[i](output)
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output, mask_features, size_list[(i + 1) % 3]
            )
        return {"pred_logits": outputs_class, "pred_masks": outputs_mask}

    def forward_prediction_heads(self, output, mask_features, attn_mask_target_size):
        decoder_output = self.decoder_norm(output).transpose(0, 1)
        outputs_class = self.class_embed(decoder_output)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoder_output), mask_features)
        attn_mask = F.interpolate(outputs_mask, size=attn_mask_target_size, mode="bilinear", align_corners=False)
        attn_mask = attn_mask.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1) < 0.5
        return outputs_class, outputs_mask, attn_mask.detach()


class MaskFormerInteractionHead(nn.Module):
    def __init__(self, cfg, channels):
        super().__init__()
        self.pixel_decoder = MSDeformAttnPixelDecoder(cfg, channels)
        self.predictor = OpenTransformerPredictor(cfg, cfg["conv_dim"])
        self.interaction = ContextInteraction(cfg["conv_dim"], cfg["text_dim"], cfg["inter_dim"], cfg["inter_heads"])

    def forward(self, features, text_feat):
        mask_features, _, multi_scale = self.pixel_decoder.forward_features(features)
        mask_features, multi_scale = self.interaction(mask_features, multi_scale, text_feat)
        return self.predictor(multi_scale, mask_features)


class ClipAdapter(nn.Module):
    def __init__(self, text_dim):
        super().__init__()
        self.non_object_embedding = nn.Parameter(torch.empty(1, text_dim))


class RefFreeSeg(nn.Module):
    """The generator part of the released MAFT model: `backbone`, `sem_seg_head`, `clip_adapter.non_object_embedding`."""

    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = dict(TINY if cfg is None else cfg)
        c = self.cfg
        self.backbone = ResNet(c)
        channels = [c["res2_out"] * 2**i for i in range(4)]
        self.sem_seg_head = MaskFormerInteractionHead(c, channels)
        self.clip_adapter = ClipAdapter(c["text_dim"])
        self.register_buffer("pixel_mean", torch.tensor(c["pixel_mean"]).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(c["pixel_std"]).view(-1, 1, 1), False)

    def text_features(self, class_embeddings):
        """`MaskFormerClipAdapter.get_text_features`: the (already normalised) class embeddings + normalised void."""
        void = self.clip_adapter.non_object_embedding
        return torch.cat([class_embeddings, void / void.norm(dim=-1, keepdim=True)], dim=0)

    @torch.no_grad()
    def forward(self, images, class_embeddings):
        """`MAFT.forward` up to the generator's outputs, for already resized `(3, H, W)` uint8 images (one batch).

        Returns a dict: `mask_logits (B, Q, Hp/4, Wp/4)`, `class_logits (B, Q, K + 1)` (FreeSeg's
        `get_sim_logits(text, normalize(pred_logits))`, temperature 100), `mask_probs (B, Q, Hp, Wp)` (MAFT's
        `mask_results`: upsampled with align_corners=True, sigmoid), `image_sizes`.
        """
        normalized = [(x.float() - self.pixel_mean) / self.pixel_std for x in images]
        sizes = [tuple(x.shape[-2:]) for x in normalized]
        d = self.cfg["size_divisibility"]
        hp = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        wp = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        batch = normalized[0].new_zeros(len(images), 3, hp, wp)  # ImageList.from_tensors: pad with 0
        for i, x in enumerate(normalized):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        text = self.text_features(class_embeddings)
        outputs = self.sem_seg_head(self.backbone(batch), text)
        embeddings = outputs["pred_logits"]
        class_logits = 100 * (embeddings / embeddings.norm(dim=-1, keepdim=True)).matmul(text.transpose(-1, -2))
        upsampled = F.interpolate(outputs["pred_masks"], size=(hp, wp), mode="bilinear", align_corners=True)
        return {
            "mask_logits": outputs["pred_masks"],
            "class_logits": class_logits,
            "mask_probs": upsampled.sigmoid(),
            "image_sizes": sizes,
        }


def sem_seg_postprocess(result, img_size, output_height, output_width):
    """detectron2's `sem_seg_postprocess`: crop to the image, resize bilinearly to the output size."""
    result = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear", align_corners=False)[0]


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and buffer with random values of a plausible scale (frozen-BN variances > 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name in ("pixel_mean", "pixel_std"):  # the input normalisation is a constant, not a weight
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.ndim == 1 and (
                name.endswith("norm.weight") or "norm" in name.split(".")[-2] or "layer_norm" in name
            ):
                tensor.copy_(1 + 0.2 * torch.randn(tensor.shape, generator=generator))
            elif tensor.ndim <= 1:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))
    return model


def released_state_dict(model: RefFreeSeg, wrap: bool = True, extras: bool = True) -> dict:
    """The reference's weights in the released checkpoint layout: `{"model": {...}}` (detectron2's wrapping) with, when
    `extras`, tensors of the MAFT part that the generator conversion must ignore."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    if extras:
        state["clip_adapter.clip_model.visual.conv1.weight"] = torch.zeros(8, 3, 4, 4)
        state["clip_adapter.clip_model.token_embedding.weight"] = torch.zeros(10, 8)
        state["IPCLIP.conv1.weight"] = torch.zeros(8, 3, 4, 4)
        state["T.conv1.weight"] = torch.zeros(8, 3, 4, 4)
        state["criterion.empty_weight"] = torch.ones(4)
    return {"model": state, "iteration": 1000} if wrap else state
