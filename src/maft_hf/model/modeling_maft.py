"""The IP-CLIP encoder of MAFT (paper section 4.1) as transformers models.

From layer `config.mask_start_layer` the [CLS] token is replaced by `N` copies, one per proposal; copy `n` attends to
itself and the patches of proposal `n` (paper Eq. 2-4), patches to patches only. Parameter names are CLIP's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings, CLIPVisionModelOutput, eager_attention_forward
from transformers.utils import ModelOutput

from .configuration_maft import MAFTConfig, MaskAwareCLIPVisionConfig
from .hub_maft import MAFTHubMixin

SUPPORTED_ATTENTION = ("eager", "sdpa")


@dataclass
class MaskAwareCLIPVisionOutput(BaseModelOutputWithPooling):
    """With proposals: the sequence is the `N` [CLS] copies then the patches; `pooler_output` = `mask_embeds`
    `(batch, N, hidden)`, the post-layernormed final state of each copy."""

    mask_embeds: torch.FloatTensor | None = None


@dataclass
class MAFTOutput(ModelOutput):
    """`logits_per_mask (batch, N, num_texts)` = `exp(logit_scale) * cos(mask_embeds, text_embeds)` (paper Eq. 1),
    normalised `mask_embeds (batch, N, dim)` and `text_embeds (num_texts, dim)`, `loss` (Eq. 5-7) given `labels`."""

    loss: torch.FloatTensor | None = None
    logits_per_mask: torch.FloatTensor | None = None
    mask_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    vision_model_output: MaskAwareCLIPVisionOutput | None = None
    text_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self):
        return tuple(self[k] if not k.endswith("model_output") else getattr(self, k).to_tuple() for k in self.keys())


def resize_position_embeddings(position_embeddings: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """`(1 + g * g, hidden)` CLIP position embeddings -> `(1 + rows * cols, hidden)` as the released code: class
    position unchanged, the square grid resized bicubically with `align_corners=True`."""
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
    """`proposal_masks (batch, N, H, W)` -> `(batch, N, rows * cols)` bool patch visibility, as released: bilinear
    resize to `grid_size` (`align_corners=False`, no antialias), then `>= threshold`."""
    batch, num_proposals, height, width = proposal_masks.shape
    masks = proposal_masks.to(torch.float32)
    if masks.shape[-2:] != tuple(grid_size):
        # one plane per proposal avoids the channels-last copy of (batch, N, H, W) on CPU (1 s and 2 GB at N=300)
        masks = F.interpolate(
            masks.reshape(-1, 1, height, width), size=tuple(grid_size), mode="bilinear", align_corners=False
        )
    return (masks >= threshold).reshape(batch, num_proposals, -1)


def copy_rows_mask(patch_visibility: torch.Tensor) -> torch.Tensor:
    """`(batch, N, P)` visibility -> `(batch, 1, N, N + P)` bool copy-row mask: copy `n` sees itself and its patches."""
    batch, num_copies, _ = patch_visibility.shape
    eye = torch.eye(num_copies, dtype=torch.bool, device=patch_visibility.device).expand(batch, -1, -1)
    return torch.cat([eye, patch_visibility], dim=-1).unsqueeze(1)


def mask_aware_layer(
    layer: nn.Module, hidden_states: torch.Tensor, num_copies: int, copy_mask: torch.Tensor, keep_patches: bool = True
) -> torch.Tensor:
    """One `CLIPEncoderLayer` on `(batch, N + P, hidden)` (copies first) as two attention calls: patches unmasked,
    copy rows under `copy_mask`. Returns `(batch, N + P, hidden)`, or `(batch, N, hidden)` if not `keep_patches`."""
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
        rows = (t[:, :, num_copies:] for t in (queries, keys, values))
        patches, _ = interface(attn, *rows, None, scaling=attn.scale, dropout=dropout)
        out, residual = torch.cat([out, patches], dim=1), hidden_states
    hidden = residual + attn.out_proj(out.reshape(batch, out.shape[1], -1))
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def to_backend_mask(mask: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """Convert a boolean attention mask (True = attend) to the format the attention back-end expects."""
    if attn_implementation == "sdpa":
        return mask
    if attn_implementation == "eager":
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return bias.masked_fill(~mask, torch.finfo(dtype).min)
    raise ValueError(
        f"Mask-aware attention supports attn_implementation in {SUPPORTED_ATTENTION}, got {attn_implementation!r}."
    )


def check_proposal_masks(
    proposal_masks: torch.Tensor, batch_size: int, proposal_valid_mask: torch.Tensor | None = None
) -> None:
    """Raise a `ValueError` for proposals of the wrong type, shape or dtype (reads no values: no host sync)."""
    if not isinstance(proposal_masks, torch.Tensor) or proposal_masks.ndim != 4:
        got = tuple(proposal_masks.shape) if isinstance(proposal_masks, torch.Tensor) else type(proposal_masks)
        raise ValueError(f"proposal_masks must be a tensor of shape (batch, N, H, W), got {got}.")
    if proposal_masks.shape[0] != batch_size:
        raise ValueError(
            f"proposal_masks has batch size {proposal_masks.shape[0]} but pixel_values has batch size {batch_size}."
        )
    # a check that also holds when N is a symbolic size (torch.export, torch.compile with `mark_unbacked`)
    torch._check_value(
        proposal_masks.shape[1] != 0,
        lambda: "proposal_masks has N = 0 proposals; at least one proposal per image is required.",
    )
    if proposal_masks.shape[2] == 0 or proposal_masks.shape[3] == 0:
        raise ValueError(f"proposal_masks has an empty spatial size {tuple(proposal_masks.shape[2:])}.")
    if proposal_masks.dtype != torch.bool and not proposal_masks.is_floating_point():
        raise ValueError(f"proposal_masks must be float in [0, 1] or bool, got dtype {proposal_masks.dtype}.")
    if proposal_valid_mask is None:
        return
    if proposal_valid_mask.is_floating_point():
        raise ValueError(f"proposal_valid_mask must be bool (True = real proposal), got {proposal_valid_mask.dtype}.")
    if tuple(proposal_valid_mask.shape) != tuple(proposal_masks.shape[:2]):
        expected, got = tuple(proposal_masks.shape[:2]), tuple(proposal_valid_mask.shape)
        raise ValueError(f"proposal_valid_mask must have shape (batch, N) = {expected}, got {got}.")


def validate_proposal_values(proposal_masks: torch.Tensor) -> None:
    """Raise a `ValueError` when float proposals hold NaN or values outside [0, 1]. A host sync: the processor and
    proposal sources call it, the forward does not."""
    floats = isinstance(proposal_masks, torch.Tensor) and proposal_masks.is_floating_point()
    if not floats or proposal_masks.numel() == 0:
        return
    low, high = (v.item() for v in torch.aminmax(proposal_masks))  # one pass; NaN propagates to both
    if low != low or high != high:
        raise ValueError("proposal_masks contains NaN values; expected probabilities in [0, 1].")
    if low < 0 or high > 1:
        raise ValueError(
            f"proposal_masks must hold probabilities in [0, 1], got values in [{low:.4g}, {high:.4g}]. "
            "Apply a sigmoid to mask logits first."
        )


def pad_proposals(masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack one `(N_i, H, W)` tensor per image into `proposal_masks (batch, max N_i, H, W)` (zero-padded) and
    `proposal_valid_mask (batch, max N_i)` (True = real). Padded entries cannot change the real ones."""
    if len(masks) == 0:
        raise ValueError("pad_proposals needs at least one image's proposals.")
    spatial = {tuple(m.shape[-2:]) for m in masks}
    if len(spatial) != 1 or any(m.ndim != 3 for m in masks):
        raise ValueError(f"Each entry must be (N_i, H, W) with one common H, W; got {[tuple(m.shape) for m in masks]}.")
    padded = pad_sequence(list(masks), batch_first=True)
    counts = torch.tensor([m.shape[0] for m in masks], device=padded.device)
    return padded, torch.arange(padded.shape[1], device=padded.device) < counts[:, None]


class MaskAwareCLIPVisionEmbeddings(CLIPVisionEmbeddings):
    """CLIP's vision embeddings for any input size, as released: a `floor(size / patch_size)` grid a side, position
    embeddings resized by `config.position_embedding_interpolation` (`interpolate_pos_encoding=None`: when needed)."""

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(f"Image size {height}x{width} is smaller than the patch size {self.patch_size}.")
        same_size = height == self.image_size and width == self.image_size
        if interpolate_pos_encoding is None:
            interpolate_pos_encoding = not same_size
        if same_size or not interpolate_pos_encoding or self.config.position_embedding_interpolation == "hf":
            return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        grid = (height // self.patch_size, width // self.patch_size)
        positions = resize_position_embeddings(self.position_embedding.weight, grid)
        return torch.cat([cls, patches], dim=1) + positions.unsqueeze(0)


class EagerOrSdpaAttention:
    """Refuses attention back-ends other than `"eager"` and `"sdpa"` (the only ones taking the copy-row mask)."""

    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    def _check_and_adjust_attn_implementation(self, attn_implementation, *args, **kwargs):
        if attn_implementation is not None and attn_implementation not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"{type(self).__name__} supports attn_implementation in {SUPPORTED_ATTENTION}, got "
                f"{attn_implementation!r}: its mask-aware layers pass the attention back-end a mask of the proposal "
                "rows, which only those two take. Load it with attn_implementation='sdpa' (default) or 'eager'."
            )
        return super()._check_and_adjust_attn_implementation(attn_implementation, *args, **kwargs)


class MaskAwareCLIPVisionModel(EagerOrSdpaAttention, CLIPVisionModel):
    r"""
    The IP-CLIP image encoder: `CLIPVisionModel` without `proposal_masks`; with `proposal_masks (batch, N, H, W)` it
    returns `mask_embeds (batch, N, hidden_size)`.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf import MaskAwareCLIPVisionModel
    >>> from maft_hf.testing import tiny_vision_config

    >>> model = MaskAwareCLIPVisionModel(tiny_vision_config()).eval()
    >>> masks = torch.rand(1, 5, 32, 32)  # 5 proposals, probabilities in [0, 1]
    >>> model(torch.randn(1, 3, 32, 32), proposal_masks=masks).mask_embeds.shape
    torch.Size([1, 5, 32])
    ```"""

    config: MaskAwareCLIPVisionConfig
    config_class = MaskAwareCLIPVisionConfig
    _no_split_modules = CLIPVisionModel._no_split_modules + ["MaskAwareCLIPVisionEmbeddings"]

    def __init__(self, config: MaskAwareCLIPVisionConfig):
        super().__init__(config)
        config.validate_mask_fields()
        embeddings = MaskAwareCLIPVisionEmbeddings(config)
        embeddings.load_state_dict(self.embeddings.state_dict(), assign=True)  # CLIP's initial values
        self.embeddings = embeddings

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
    ) -> MaskAwareCLIPVisionOutput | BaseModelOutputWithPooling | tuple:
        r"""`pixel_values (batch, 3, H, W)`; `proposal_masks (batch, N, h, w)` in [0, 1] or bool, any resolution;
        `proposal_valid_mask (batch, N)` False for padding; `return_patch_tokens=False` skips the last patch rows."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else pixel_values
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {got}.")
        if proposal_masks is None:
            options = {"output_hidden_states": output_hidden_states, "return_dict": return_dict}
            kwargs.update({k: v for k, v in options.items() if v is not None})
            return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        if kwargs.pop("output_attentions", None) or self.config.output_attentions:
            raise ValueError(
                "output_attentions is not supported with proposal_masks (the mask-aware layers return no weights); "
                "without proposal_masks the model returns CLIP's attentions."
            )
        check_proposal_masks(proposal_masks, pixel_values.shape[0], proposal_valid_mask)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        visibility = proposals_to_patch_visibility(proposal_masks.to(hidden.device), grid, self.config.mask_threshold)
        if proposal_valid_mask is not None:
            visibility = visibility & proposal_valid_mask.to(device=visibility.device, dtype=torch.bool)[..., None]
        copy_mask = to_backend_mask(copy_rows_mask(visibility), self.config._attn_implementation, hidden.dtype)
        num_copies, keep_last = proposal_masks.shape[1], return_patch_tokens or output_hidden_states
        hidden, all_hidden = self._encode_with_proposals(hidden, copy_mask, num_copies, keep_last, output_hidden_states)
        mask_embeds = self.post_layernorm(hidden[:, :num_copies])
        output = MaskAwareCLIPVisionOutput(
            last_hidden_state=hidden, pooler_output=mask_embeds, hidden_states=all_hidden, mask_embeds=mask_embeds
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def _encode_with_proposals(self, hidden, copy_mask, num_copies, keep_last_patches, output_hidden_states):
        start, last = self.config.mask_start_layer, len(self.encoder.layers) - 1
        all_hidden = (hidden,) if output_hidden_states else None
        for index, layer in enumerate(self.encoder.layers):
            if index < start:
                hidden = layer(hidden, None)
            else:
                if index == start:
                    hidden = torch.cat([hidden[:, :1].expand(-1, num_copies, -1), hidden[:, 1:]], dim=1)
                keep = keep_last_patches or index < last
                checkpointed = layer.gradient_checkpointing and self.training
                run = layer._gradient_checkpointing_func if checkpointed else lambda f, *args: f(*args)
                hidden = run(mask_aware_layer, layer, hidden, num_copies, copy_mask, keep)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden,)
        return hidden, all_hidden


@dataclass
class MaskAwareCLIPVisionModelOutput(CLIPVisionModelOutput):
    """`CLIPVisionModelOutput` plus projected, unnormalised `mask_embeds (batch, N, projection_dim)`."""

    mask_embeds: torch.FloatTensor | None = None


class MaskAwareCLIPVisionModelWithProjection(EagerOrSdpaAttention, CLIPVisionModelWithProjection):
    r"""
    `CLIPVisionModelWithProjection` with the IP-CLIP encoder: with `proposal_masks`, `mask_embeds (batch, N, dim)`.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf import MaskAwareCLIPVisionModelWithProjection
    >>> from maft_hf.testing import tiny_vision_config

    >>> model = MaskAwareCLIPVisionModelWithProjection(tiny_vision_config(projection_dim=16)).eval()
    >>> model(torch.randn(1, 3, 32, 32), proposal_masks=torch.rand(1, 5, 32, 32)).mask_embeds.shape
    torch.Size([1, 5, 16])
    ```"""

    config: MaskAwareCLIPVisionConfig
    config_class = MaskAwareCLIPVisionConfig
    _no_split_modules = MaskAwareCLIPVisionModel._no_split_modules

    def __init__(self, config: MaskAwareCLIPVisionConfig):
        super().__init__(config)
        self.vision_model = MaskAwareCLIPVisionModel._from_config(config)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        proposal_masks: torch.Tensor | None = None,
        proposal_valid_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        return_patch_tokens: bool = True,
        **kwargs,
    ) -> MaskAwareCLIPVisionModelOutput | tuple:
        if proposal_masks is None:
            if return_dict is not None:
                kwargs["return_dict"] = return_dict
            return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        kwargs.update(return_dict=True, return_patch_tokens=return_patch_tokens)
        outputs = self.vision_model(
            pixel_values, proposal_masks, proposal_valid_mask, interpolate_pos_encoding, **kwargs
        )
        output = MaskAwareCLIPVisionModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            mask_embeds=self.visual_projection(outputs.mask_embeds),
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


class MaskAwareCLIPModel(MAFTHubMixin, EagerOrSdpaAttention, CLIPModel):
    r"""
    CLIP with the IP-CLIP image encoder: classifies `N` proposals against a vocabulary in one pass. It has exactly
    CLIP's parameters: `from_pretrained` of any CLIP checkpoint loads every weight.

    Example:

    ```python
    >>> import torch
    >>> from maft_hf import MaskAwareCLIPModel
    >>> from maft_hf.testing import tiny_maft_config

    >>> model = MaskAwareCLIPModel(tiny_maft_config()).eval()
    >>> pixel_values, masks = torch.randn(1, 3, 32, 32), torch.rand(1, 7, 32, 32)
    >>> input_ids = torch.tensor([[0, 5, 6, 1], [0, 7, 8, 1]])  # two class prompts
    >>> out = model(input_ids=input_ids, pixel_values=pixel_values, proposal_masks=masks)
    >>> out.logits_per_mask.shape  # (batch, N, num_texts)
    torch.Size([1, 7, 2])
    >>> class_scores = out.logits_per_mask.softmax(-1)
    ```"""

    config: MAFTConfig
    config_class = MAFTConfig
    _no_split_modules = MaskAwareCLIPVisionModel._no_split_modules

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
        """The vision output with `pooler_output` = `visual_projection(mask_embeds)` `(batch, N, projection_dim)`,
        unnormalised like `get_image_features`; the last layer's patch rows are skipped by default."""
        if proposal_masks is None:
            raise ValueError("get_mask_features needs proposal_masks of shape (batch, N, H, W); got None.")
        kwargs.update(return_dict=True, return_patch_tokens=return_patch_tokens)
        outputs = self.vision_model(
            pixel_values, proposal_masks, proposal_valid_mask, interpolate_pos_encoding, **kwargs
        )
        outputs.pooler_output = self.visual_projection(outputs.mask_embeds)
        return outputs if return_dict is not False else outputs.to_tuple()

    def get_image_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None, **kwargs):
        return super().get_image_features(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        proposal_masks: torch.Tensor | None = None,
        proposal_valid_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """`CLIPModel.forward` without `proposal_masks`; with them a [`MAFTOutput`], and `labels (batch, H, W)` (text
        ids, 255 = unlabelled) add the mask-aware loss of paper Eq. 5-7."""
        if proposal_masks is None:
            if labels is not None:
                raise ValueError("labels need proposal_masks: the MAFT loss scores proposals against label maps.")
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
            raise ValueError("return_loss (CLIP's contrastive loss) is not defined with proposal_masks; pass labels.")
        vision_outputs = self.get_mask_features(
            pixel_values, proposal_masks, proposal_valid_mask, interpolate_pos_encoding, **kwargs
        )
        text_outputs = self.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )
        mask_embeds = F.normalize(vision_outputs.pooler_output, dim=-1)
        text_embeds = F.normalize(text_outputs.pooler_output, dim=-1)
        logits = self.logit_scale.exp() * mask_embeds @ text_embeds.t().to(mask_embeds.device)
        loss = None
        if labels is not None:
            # not an import statement: the remote-code copy of this file must load without the package
            losses = importlib.import_module("maft_hf.training.losses")
            loss = losses.maft_loss(logits, proposal_masks, labels, proposal_valid_mask=proposal_valid_mask).loss
        output = MAFTOutput(
            loss=loss,
            logits_per_mask=logits,
            mask_embeds=mask_embeds,
            text_embeds=text_embeds,
            vision_model_output=vision_outputs,
            text_model_output=text_outputs,
        )
        return output if return_dict is not False else output.to_tuple()
