"""The IP-CLIP encoder of MAFT (paper section 4.1) as transformers models.

`MaskAwareCLIPVisionModel` is a `CLIPVisionModel` that, given `N` proposal masks per image, replaces the [CLS]
token by `N` copies before layer `L = config.mask_start_layer` and from there on runs the attention rule of paper
Eq. 2-4:

* copy `n` attends to itself and to the patches where proposal `n` is on (never to the other copies);
* patch tokens attend to all patch tokens and to no copy, so the patch stream does not depend on the masks.

Layers before `L` are transformers' own `CLIPEncoderLayer` modules, run unchanged. From `L` on, each layer runs
[`mask_aware_layer`]: the same sub-modules (layer norms, q/k/v/out projections, MLP) and transformers' attention
back-end of the config ("eager" or "sdpa"), split in two calls that compute exactly the masked full-sequence
attention: the patches attend to the patches with no mask at all, and only the `N` copy rows carry a mask,
`(batch, 1, N, N + P)`, boolean for SDPA. Nothing `(N + P) x (N + P)` is built, and the last layer skips the patch
rows when their states are not returned. [`full_sequence_layer`] is the direct form (one masked call over the
whole sequence, as the released code) and the tests hold the two equal. Parameter names are CLIP's, so a CLIP
checkpoint loads with no missing or unexpected keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPVisionModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward
from transformers.utils import ModelOutput

from .configuration_maft import MAFTConfig, MaskAwareCLIPVisionConfig
from .hub_maft import MAFTHubMixin

SUPPORTED_ATTENTION = ("eager", "sdpa")


@dataclass
class MaskAwareCLIPVisionOutput(BaseModelOutputWithPooling):
    r"""
    Output of [`MaskAwareCLIPVisionModel`].

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        Final hidden states. Without proposals the sequence is `[CLS] + patches` (`1 + num_patches`) as in CLIP;
        with proposals it is the `N` [CLS] copies followed by the patches (`N + num_patches`).
    pooler_output (`torch.FloatTensor`):
        Without proposals: the post-layernormed [CLS] state, `(batch_size, hidden_size)`, as in CLIP. With
        proposals: the same as `mask_embeds`, `(batch_size, N, hidden_size)`.
    mask_embeds (`torch.FloatTensor` of shape `(batch_size, N, hidden_size)`, *optional*):
        One embedding per proposal: the post-layernormed final state of its [CLS] copy. Only with proposals.
        Entries marked invalid by `proposal_valid_mask` are computed as for an all-zero mask; ignore them.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        The embeddings after the pre-layernorm and the output of every layer (`output_hidden_states=True`).
        From `mask_start_layer` on their sequence length is `N + num_patches`.
    """

    mask_embeds: torch.FloatTensor | None = None


@dataclass
class MAFTOutput(ModelOutput):
    r"""
    Output of [`MaskAwareCLIPModel`] when called with `proposal_masks`.

    logits_per_mask (`torch.FloatTensor` of shape `(batch_size, N, num_texts)`):
        `exp(logit_scale) * cos(mask_embeds, text_embeds)`; `exp(logit_scale)` is 100 for OpenAI CLIP weights.
        Softmax over the last dimension gives the class scores of paper Eq. 1.
    mask_embeds (`torch.FloatTensor` of shape `(batch_size, N, projection_dim)`):
        L2-normalised projected mask embeddings.
    text_embeds (`torch.FloatTensor` of shape `(num_texts, projection_dim)`):
        L2-normalised projected text embeddings.
    vision_model_output ([`MaskAwareCLIPVisionOutput`]):
        Output of the vision tower.
    text_model_output ([`~transformers.modeling_outputs.BaseModelOutputWithPooling`]):
        Output of the text tower.
    """

    logits_per_mask: torch.FloatTensor | None = None
    mask_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    vision_model_output: MaskAwareCLIPVisionOutput | None = None
    text_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self):
        return tuple(self[k] if not k.endswith("model_output") else getattr(self, k).to_tuple() for k in self.keys())


def resize_position_embeddings(position_embeddings: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Resize CLIP position embeddings the way the released MAFT code does.

    Args:
        position_embeddings: `(1 + g * g, hidden_size)`, the class position first, then a square `g x g` grid.
        grid_size: `(rows, cols)` of the target patch grid.

    Returns:
        `(1 + rows * cols, hidden_size)`: the class position unchanged, the grid resized with bicubic
        interpolation and `align_corners=True`.
    """
    class_position, grid = position_embeddings[:1], position_embeddings[1:]
    side = int(round(grid.shape[0] ** 0.5))
    if side * side != grid.shape[0]:
        raise ValueError(f"Expected a square grid of position embeddings, got {grid.shape[0]} positions.")
    if (side, side) == tuple(grid_size):
        return position_embeddings
    grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(grid_size), mode="bicubic", align_corners=True)
    grid = grid.permute(0, 2, 3, 1).reshape(-1, position_embeddings.shape[-1])
    return torch.cat([class_position, grid], dim=0)


def proposals_to_patch_visibility(
    proposal_masks: torch.Tensor, grid_size: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Which patches each proposal's [CLS] copy may attend to.

    Args:
        proposal_masks: `(batch, N, H, W)` probabilities in [0, 1] (float) or bool.
        grid_size: `(rows, cols)` of the patch grid.
        threshold: a patch is visible where the resized mask is `>= threshold`.

    Returns:
        `(batch, N, rows * cols)` bool: the masks resized bilinearly (`align_corners=False`, no antialias), as
        the released code does, then thresholded.
    """
    batch, num_proposals, height, width = proposal_masks.shape
    masks = proposal_masks.to(torch.float32)
    if masks.shape[-2:] != tuple(grid_size):
        # one plane per proposal: the same per-plane bilinear kernel, but without the channels-last copy that the
        # (batch, N, H, W) layout triggers on CPU (8 x 300 masks at 480 px: 15 ms instead of 1 s and 2 GB)
        masks = F.interpolate(
            masks.reshape(-1, 1, height, width), size=tuple(grid_size), mode="bilinear", align_corners=False
        )
    return (masks >= threshold).reshape(batch, num_proposals, -1)


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


def copy_rows_mask(patch_visibility: torch.Tensor) -> torch.Tensor:
    """The copy rows of [`build_mask_aware_attention_mask`]: `(batch, 1, N, N + P)` bool, True = attend."""
    batch, num_copies, _ = patch_visibility.shape
    eye = torch.eye(num_copies, dtype=torch.bool, device=patch_visibility.device).expand(batch, -1, -1)
    return torch.cat([eye, patch_visibility], dim=-1).unsqueeze(1)


def mask_aware_layer(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    num_copies: int,
    copy_mask: torch.Tensor,
    keep_patches: bool = True,
) -> torch.Tensor:
    """One `CLIPEncoderLayer` under the rule of paper Eq. 2-4, computed without the full-sequence mask.

    Args:
        layer: a transformers `CLIPEncoderLayer` (its modules are used as they are).
        hidden_states: `(batch, N + P, hidden)`, the `N` copies first.
        num_copies: `N`.
        copy_mask: `(batch, 1, N, N + P)` in the attention back-end's format (see [`to_backend_mask`]).
        keep_patches: compute the patch rows; `False` returns the copies only, `(batch, N, hidden)`.

    Returns:
        `(batch, N + P, hidden)`, or `(batch, N, hidden)` with `keep_patches=False`.
    """
    attn = layer.self_attn
    batch = hidden_states.shape[0]
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    dropout = attn.dropout if attn.training else 0.0

    def heads(t):
        return t.view(batch, t.shape[1], -1, attn.head_dim).transpose(1, 2)

    normed = layer.layer_norm1(hidden_states)
    keys, values = heads(attn.k_proj(normed)), heads(attn.v_proj(normed))
    queries = heads(attn.q_proj(normed if keep_patches else normed[:, :num_copies]))
    out, _ = interface(attn, queries[:, :, :num_copies], keys, values, copy_mask, scaling=attn.scale, dropout=dropout)
    residual = hidden_states[:, :num_copies]
    if keep_patches:
        patches, _ = interface(
            attn,
            queries[:, :, num_copies:],
            keys[:, :, num_copies:],
            values[:, :, num_copies:],
            None,
            scaling=attn.scale,
            dropout=dropout,
        )
        out, residual = torch.cat([out, patches], dim=1), hidden_states
    hidden = residual + attn.out_proj(out.reshape(batch, out.shape[1], -1))
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def full_sequence_layer(layer: nn.Module, hidden_states: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
    """The direct form: `layer(hidden_states, full_mask)` with the `(batch, 1, N + P, N + P)` mask of
    [`build_mask_aware_attention_mask`] in the back-end's format. Kept as the reference of [`mask_aware_layer`]."""
    return layer(hidden_states, full_mask)


def to_backend_mask(mask: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """Convert a boolean attention mask (True = attend) to the format the attention back-end expects."""
    if attn_implementation == "sdpa":
        return mask
    if attn_implementation == "eager":
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return bias.masked_fill(~mask, torch.finfo(dtype).min)
    raise ValueError(
        f"The mask-aware attention supports attn_implementation in {SUPPORTED_ATTENTION}, got "
        f"{attn_implementation!r}. Load the model with attn_implementation='sdpa' or 'eager'."
    )


def check_proposal_masks(
    proposal_masks: torch.Tensor, batch_size: int, proposal_valid_mask: torch.Tensor | None = None
) -> None:
    """Raise a `ValueError` that names what was expected and what arrived, for malformed proposals."""
    if not isinstance(proposal_masks, torch.Tensor):
        raise ValueError(
            f"proposal_masks must be a torch.Tensor of shape (batch, N, H, W), got {type(proposal_masks)}."
        )
    if proposal_masks.ndim != 4:
        raise ValueError(
            f"proposal_masks must have shape (batch, N, H, W) (4 dimensions), got shape {tuple(proposal_masks.shape)}."
        )
    if proposal_masks.shape[0] != batch_size:
        raise ValueError(
            f"proposal_masks has batch size {proposal_masks.shape[0]} but pixel_values has batch size {batch_size}."
        )
    if proposal_masks.shape[1] == 0:
        raise ValueError("proposal_masks has N = 0 proposals; at least one proposal per image is required.")
    if proposal_masks.shape[2] == 0 or proposal_masks.shape[3] == 0:
        raise ValueError(f"proposal_masks has an empty spatial size {tuple(proposal_masks.shape[2:])}.")
    if proposal_masks.dtype != torch.bool:
        if not proposal_masks.is_floating_point():
            raise ValueError(f"proposal_masks must be float in [0, 1] or bool, got dtype {proposal_masks.dtype}.")
        low, high = (v.item() for v in torch.aminmax(proposal_masks))  # one pass; NaN propagates to both
        if low != low or high != high:
            raise ValueError("proposal_masks contains NaN values; expected probabilities in [0, 1].")
        if low < 0 or high > 1:
            raise ValueError(
                f"proposal_masks must hold probabilities in [0, 1], got values in [{low:.4g}, {high:.4g}]. "
                "Apply a sigmoid to mask logits first."
            )
    if proposal_valid_mask is not None and proposal_valid_mask.is_floating_point():
        raise ValueError(
            f"proposal_valid_mask must be bool (True = real proposal), got dtype {proposal_valid_mask.dtype}."
        )
    if proposal_valid_mask is not None and tuple(proposal_valid_mask.shape) != tuple(proposal_masks.shape[:2]):
        raise ValueError(
            f"proposal_valid_mask must have shape (batch, N) = {tuple(proposal_masks.shape[:2])}, "
            f"got {tuple(proposal_valid_mask.shape)}."
        )


def pad_proposals(masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image proposals with different `N` into one batch.

    Args:
        masks: one `(N_i, H, W)` tensor per image, all with the same `H` and `W`.

    Returns:
        `proposal_masks (batch, max N_i, H, W)`, zero-padded, and `proposal_valid_mask (batch, max N_i)` bool,
        True for real proposals. Because a [CLS] copy reads only itself and the patches, and nothing reads a copy,
        padded entries cannot change the outputs of real ones.
    """
    if len(masks) == 0:
        raise ValueError("pad_proposals needs at least one image's proposals.")
    spatial = {tuple(m.shape[-2:]) for m in masks}
    if len(spatial) != 1 or any(m.ndim != 3 for m in masks):
        raise ValueError(f"Each entry must be (N_i, H, W) with one common H, W; got {[tuple(m.shape) for m in masks]}.")
    max_n = max(m.shape[0] for m in masks)
    padded = masks[0].new_zeros((len(masks), max_n, *masks[0].shape[-2:]))
    valid = torch.zeros(len(masks), max_n, dtype=torch.bool, device=masks[0].device)
    for i, m in enumerate(masks):
        padded[i, : m.shape[0]] = m
        valid[i, : m.shape[0]] = True
    return padded, valid


class MaskAwareCLIPVisionModel(CLIPVisionModel):
    r"""
    The IP-CLIP image encoder of MAFT: a `CLIPVisionModel` that classifies `N` mask proposals in one pass.

    Without `proposal_masks` it computes exactly what `CLIPVisionModel` computes with the same weights. With
    `proposal_masks (batch, N, H, W)` it returns `mask_embeds (batch, N, hidden_size)`.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf import MaskAwareCLIPVisionConfig, MaskAwareCLIPVisionModel

    >>> config = MaskAwareCLIPVisionConfig(
    ...     hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
    ...     image_size=32, patch_size=8, mask_start_layer=2,
    ... )
    >>> model = MaskAwareCLIPVisionModel(config).eval()
    >>> pixel_values = torch.randn(1, 3, 32, 32)
    >>> masks = torch.rand(1, 5, 32, 32)  # 5 proposals, probabilities in [0, 1]
    >>> model(pixel_values, proposal_masks=masks).mask_embeds.shape
    torch.Size([1, 5, 32])
    ```"""

    config: MaskAwareCLIPVisionConfig
    config_class = MaskAwareCLIPVisionConfig

    def __init__(self, config: MaskAwareCLIPVisionConfig):
        super().__init__(config)
        config.validate_mask_fields()

    # ----------------------------------------------------------------------------------------------------------
    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None) -> torch.Tensor:
        """Patch + class embeddings with position embeddings, `(batch, 1 + num_patches, hidden_size)`.

        `interpolate_pos_encoding=None` resizes the position embeddings whenever the input is not `image_size`,
        with the method of `config.position_embedding_interpolation`; `False` keeps CLIP's strict size check.
        """
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}.")
        height, width = pixel_values.shape[-2:]
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise ValueError(
                f"Image size {height}x{width} must be a multiple of the patch size {patch} in both dimensions."
            )
        same_size = height == self.config.image_size and width == self.config.image_size
        if interpolate_pos_encoding is None:
            interpolate_pos_encoding = not same_size
        if self.config.position_embedding_interpolation == "hf" or not interpolate_pos_encoding or same_size:
            return self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        emb = self.embeddings
        patches = emb.patch_embedding(pixel_values.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = emb.class_embedding.expand(pixel_values.shape[0], 1, -1)
        positions = resize_position_embeddings(emb.position_embedding.weight, (height // patch, width // patch))
        return torch.cat([cls, patches], dim=1) + positions.unsqueeze(0)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        proposal_masks: torch.Tensor | None = None,
        proposal_valid_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_patch_tokens: bool = True,
        **kwargs,
    ) -> MaskAwareCLIPVisionOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                Normalised images; height and width multiples of the patch size.
            proposal_masks (`torch.FloatTensor` or `torch.BoolTensor` of shape `(batch_size, N, H, W)`, *optional*):
                Proposal probabilities in [0, 1] (or bool) at any resolution. `None` runs plain CLIP.
            proposal_valid_mask (`torch.BoolTensor` of shape `(batch_size, N)`, *optional*):
                False marks padding when images have different numbers of proposals (see [`pad_proposals`]).
                Padded proposals are treated as all-zero masks; they never change the real ones.
            interpolate_pos_encoding (`bool`, *optional*):
                `None` (default) resizes position embeddings when the input is not `config.image_size`.
            output_hidden_states (`bool`, *optional*):
                Return the hidden states of every layer.
            return_patch_tokens (`bool`, *optional*, defaults to `True`):
                With proposals, `False` skips the patch rows of the last layer (about 1/12 of the work of ViT-B)
                since the mask embeddings do not need them; `last_hidden_state` then holds the `N` copies only.
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required.")
        if kwargs.pop("output_attentions", False) or self.config._output_attentions:
            raise ValueError(
                "output_attentions is not supported by MaskAwareCLIPVisionModel: its masked layers use a split "
                "attention, and SDPA returns no weights. Use CLIPVisionModel with attn_implementation='eager'."
            )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        hidden = self.pre_layrnorm(self.embed(pixel_values, interpolate_pos_encoding))

        start = self.config.mask_start_layer
        num_copies = 0 if proposal_masks is None else proposal_masks.shape[1]
        if proposal_masks is not None:
            check_proposal_masks(proposal_masks, pixel_values.shape[0], proposal_valid_mask)
            proposal_masks = proposal_masks.to(pixel_values.device)
            visibility = proposals_to_patch_visibility(proposal_masks, grid, self.config.mask_threshold)
            if proposal_valid_mask is not None:
                visibility = visibility & proposal_valid_mask.to(device=visibility.device, dtype=torch.bool).unsqueeze(
                    -1
                )
            copy_mask = to_backend_mask(copy_rows_mask(visibility), self.config._attn_implementation, hidden.dtype)
        keep_last_patches = return_patch_tokens or output_hidden_states or not num_copies

        all_hidden = (hidden,) if output_hidden_states else None
        last = len(self.encoder.layers) - 1
        for index, layer in enumerate(self.encoder.layers):
            if num_copies and index >= start:
                if index == start:
                    hidden = torch.cat([hidden[:, :1].expand(-1, num_copies, -1), hidden[:, 1:]], dim=1)
                keep = keep_last_patches or index < last
                if getattr(layer, "gradient_checkpointing", False) and self.training:
                    # the checkpoint function transformers' `activation_checkpointing_enable` gave the layer
                    hidden = layer._gradient_checkpointing_func(
                        mask_aware_layer, layer, hidden, num_copies, copy_mask, keep
                    )
                else:
                    hidden = mask_aware_layer(layer, hidden, num_copies, copy_mask, keep)
            else:
                hidden = layer(hidden, None, **kwargs)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden,)

        if num_copies:
            mask_embeds = self.post_layernorm(hidden[:, :num_copies])
            output = MaskAwareCLIPVisionOutput(
                last_hidden_state=hidden, pooler_output=mask_embeds, hidden_states=all_hidden, mask_embeds=mask_embeds
            )
        else:
            output = MaskAwareCLIPVisionOutput(
                last_hidden_state=hidden, pooler_output=self.post_layernorm(hidden[:, 0]), hidden_states=all_hidden
            )
        return output if return_dict else output.to_tuple()


class MaskAwareCLIPModel(MAFTHubMixin, CLIPModel):
    r"""
    CLIP with the mask-aware IP-CLIP image encoder: classifies `N` proposals against a vocabulary in one pass.

    It has exactly CLIP's parameters; `MaskAwareCLIPModel.from_pretrained` of any CLIP checkpoint loads every
    weight and is the starting point of mask-aware fine-tuning.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf import MAFTConfig, MaskAwareCLIPModel

    >>> config = MAFTConfig(
    ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
    ...                        image_size=32, patch_size=8, mask_start_layer=2),
    ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    ...                      vocab_size=100, bos_token_id=0, eos_token_id=1),
    ...     projection_dim=16,
    ... )
    >>> model = MaskAwareCLIPModel(config).eval()
    >>> pixel_values, masks = torch.randn(1, 3, 32, 32), torch.rand(1, 7, 32, 32)
    >>> input_ids = torch.tensor([[0, 5, 6, 1], [0, 7, 8, 1]])  # two class prompts
    >>> out = model(input_ids=input_ids, pixel_values=pixel_values, proposal_masks=masks)
    >>> out.logits_per_mask.shape  # (batch, N, num_texts)
    torch.Size([1, 7, 2])
    >>> class_scores = out.logits_per_mask.softmax(-1)
    ```"""

    config: MAFTConfig
    config_class = MAFTConfig

    def __init__(self, config: MAFTConfig):
        super().__init__(config)
        self.vision_model = MaskAwareCLIPVisionModel._from_config(config.vision_config)

    def get_mask_features(
        self,
        pixel_values: torch.Tensor,
        proposal_masks: torch.Tensor,
        proposal_valid_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        return_patch_tokens: bool = False,
        **kwargs,
    ) -> MaskAwareCLIPVisionOutput | tuple:
        r"""
        Projected, not yet normalised, embeddings of the proposals, in the convention of `get_image_features`:
        the vision output whose `pooler_output` is `visual_projection(mask_embeds)`,
        `(batch_size, N, projection_dim)`. By default the patch rows of the last layer are skipped
        (`return_patch_tokens=False`), so `last_hidden_state` holds the `N` copies only.

        Example:

        ```python
        >>> feats = model.get_mask_features(pixel_values, masks).pooler_output  # (batch, N, projection_dim)
        ```"""
        if proposal_masks is None:
            raise ValueError("get_mask_features needs proposal_masks of shape (batch, N, H, W); got None.")
        outputs = self.vision_model(
            pixel_values=pixel_values,
            proposal_masks=proposal_masks,
            proposal_valid_mask=proposal_valid_mask,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            return_patch_tokens=return_patch_tokens,
            **kwargs,
        )
        outputs.pooler_output = self.visual_projection(outputs.mask_embeds)
        if return_dict is False:
            return outputs.to_tuple()
        return outputs

    def get_image_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None, **kwargs):
        """As `CLIPModel.get_image_features`, resizing position embeddings automatically (see `embed`)."""
        return super().get_image_features(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        proposal_masks: torch.Tensor | None = None,
        proposal_valid_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        r"""
        Without `proposal_masks`: exactly `CLIPModel.forward`. With `proposal_masks (batch, N, H, W)`: a
        [`MAFTOutput`] whose `logits_per_mask (batch, N, num_texts)` is `exp(logit_scale) * cosine` between every
        proposal and every text.
        """
        if proposal_masks is None:
            return super().forward(
                input_ids=input_ids,
                pixel_values=pixel_values,
                attention_mask=attention_mask,
                position_ids=position_ids,
                return_loss=return_loss,
                interpolate_pos_encoding=interpolate_pos_encoding,
                return_dict=return_dict,
                **kwargs,
            )
        if return_loss:
            raise ValueError("return_loss is not defined with proposal_masks; use maft_hf's losses instead.")
        vision_outputs = self.get_mask_features(
            pixel_values, proposal_masks, proposal_valid_mask, interpolate_pos_encoding, **kwargs
        )
        text_outputs = self.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )
        mask_embeds = F.normalize(vision_outputs.pooler_output, dim=-1)
        text_embeds = F.normalize(text_outputs.pooler_output, dim=-1)
        logits = self.logit_scale.exp() * mask_embeds @ text_embeds.t().to(mask_embeds.device)
        output = MAFTOutput(
            logits_per_mask=logits,
            mask_embeds=mask_embeds,
            text_embeds=text_embeds,
            vision_model_output=vision_outputs,
            text_model_output=text_outputs,
        )
        return output if return_dict is not False else output.to_tuple()


__all__ = [
    "MaskAwareCLIPVisionModel",
    "MaskAwareCLIPModel",
    "MaskAwareCLIPVisionOutput",
    "MAFTOutput",
    "resize_position_embeddings",
    "proposals_to_patch_visibility",
    "build_mask_aware_attention_mask",
    "copy_rows_mask",
    "mask_aware_layer",
    "full_sequence_layer",
    "to_backend_mask",
    "pad_proposals",
]
