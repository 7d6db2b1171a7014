"""References for the IP-CLIP tests, written from paper Eq. 2-4 and the released code, never used by the package.

- `reference_mask_embeds`: the whole IP-CLIP forward as one plain loop over `[N copies; P patches]` with an explicit
  `-inf` bias (masks resized bilinearly, `>= threshold`; position embeddings resized bicubic `align_corners=True`).
- `build_mask_aware_attention_mask` / `full_sequence_layer`: the direct full-sequence form of one masked layer
  (one masked call of transformers' `CLIPEncoderLayer`), the reference of the package's split `mask_aware_layer`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from maft_hf.model.modeling_maft import copy_rows_mask


# Reference: one plain loop over the full sequence [N copies; P patches] with an explicit -inf bias (Eq. 2-4).
def reference_layer(layer, x, bias):
    """A CLIP encoder layer written out by hand. x: (B, S, D); bias: (B, S, S) with 0 / -inf."""
    attn = layer.self_attn
    heads, dim = attn.num_heads, attn.head_dim
    h = F.layer_norm(x, x.shape[-1:], layer.layer_norm1.weight, layer.layer_norm1.bias, layer.layer_norm1.eps)
    B, S, _ = h.shape

    def split(t):
        return t.view(B, S, heads, dim).transpose(1, 2)

    q = split(F.linear(h, attn.q_proj.weight, attn.q_proj.bias))
    k = split(F.linear(h, attn.k_proj.weight, attn.k_proj.bias))
    v = split(F.linear(h, attn.v_proj.weight, attn.v_proj.bias))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dim)
    if bias is not None:
        scores = scores + bias[:, None]
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, S, -1)
    x = x + F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    h = F.layer_norm(x, x.shape[-1:], layer.layer_norm2.weight, layer.layer_norm2.bias, layer.layer_norm2.eps)
    h = F.linear(h, layer.mlp.fc1.weight, layer.mlp.fc1.bias)
    h = h * torch.sigmoid(1.702 * h)  # quick_gelu
    return x + F.linear(h, layer.mlp.fc2.weight, layer.mlp.fc2.bias)


def reference_mask_embeds(model, pixel_values, masks):
    """Eq. 2-4: copies see themselves and patches where M_n >= 0.5 (masks resized bilinearly); patches see patches."""
    cfg = model.config
    emb = model.embeddings
    B = pixel_values.shape[0]
    N = masks.shape[1]
    gh, gw = pixel_values.shape[-2] // cfg.patch_size, pixel_values.shape[-1] // cfg.patch_size
    patches = F.conv2d(pixel_values, emb.patch_embedding.weight, stride=cfg.patch_size).flatten(2).transpose(1, 2)
    x = torch.cat([emb.class_embedding.expand(B, 1, -1), patches], 1)
    pos = emb.position_embedding.weight
    if (gh, gw) != (cfg.image_size // cfg.patch_size,) * 2:
        side = int(math.sqrt(pos.shape[0] - 1))
        grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=True)
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)])
    x = x + pos
    x = model.pre_layrnorm(x)
    P = gh * gw
    small = F.interpolate(masks.float(), size=(gh, gw), mode="bilinear", align_corners=False).reshape(B, N, P)
    bias = torch.full((B, N + P, N + P), float("-inf"))
    for b in range(B):
        for n in range(N):
            bias[b, n, n] = 0.0
            for p in range(P):
                if small[b, n, p] >= cfg.mask_threshold:
                    bias[b, n, N + p] = 0.0
        bias[b, N:, N:] = 0.0
    for i, layer in enumerate(model.encoder.layers):
        if i == cfg.mask_start_layer:
            x = torch.cat([x[:, :1].expand(B, N, -1), x[:, 1:]], 1)
        x = reference_layer(layer, x, bias if i >= cfg.mask_start_layer else None)
    return model.post_layernorm(x[:, :N]), x[:, N:]


def build_mask_aware_attention_mask(patch_visibility: torch.Tensor) -> torch.Tensor:
    """The boolean attention rule of paper Eq. 2-4 over the sequence `[N copies, P patches]`.

    Args:
        patch_visibility: `(batch, N, P)` bool, True where copy `n` may see patch `p`.

    Returns:
        `(batch, 1, N + P, N + P)` bool, True = attend: copy `n` sees itself and its visible patches; patches
        see all patches and no copy.
    """
    batch, num_copies, num_patches = patch_visibility.shape
    device = patch_visibility.device
    patch_rows = torch.cat(
        [
            torch.zeros(num_patches, num_copies, dtype=torch.bool, device=device),
            torch.ones(num_patches, num_patches, dtype=torch.bool, device=device),
        ],
        dim=-1,
    ).expand(batch, 1, -1, -1)
    return torch.cat([copy_rows_mask(patch_visibility), patch_rows], dim=2)


def full_sequence_layer(layer: nn.Module, hidden_states: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
    """The direct form: `layer(hidden_states, full_mask)` with the `(batch, 1, N + P, N + P)` mask of
    [`build_mask_aware_attention_mask`] in the back-end's format. Kept as the reference of [`mask_aware_layer`]."""
    return layer(hidden_states, full_mask)
