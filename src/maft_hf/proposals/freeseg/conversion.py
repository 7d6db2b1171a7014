"""Convert the FreeSeg generator inside a released MAFT checkpoint into a [`FreeSegModel`] folder.

The generator is every tensor under `backbone.` and `sem_seg_head.` of the released state dict plus the learned void
text embedding `clip_adapter.non_object_embedding`; the rest is the CLIP part. Keys are renamed by `_RENAMES`, sizes
read from the tensors; what they cannot tell (heads, dilations, GroupNorm groups, pixel mean/std, test sizes) comes
from the [`FreeSegConfig`] defaults or `config_overrides`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ...hub.official_checkpoint import flatten_tensors
from .configuration_freeseg import FreeSegConfig
from .modeling_freeseg import FreeSegModel

GENERATOR_PREFIXES = ("backbone.", "sem_seg_head.")
VOID_KEY = "clip_adapter.non_object_embedding"
_ANCHOR = "backbone.stem.conv1.weight"
# released name (prefix stripped) -> `FreeSegModel` name, the first matching rule; `backbone.*` and unknown
# `sem_seg_head.*` keys are kept as they are (the latter then reported as unexpected)
_RENAMES = (
    (rf"^{re.escape(VOID_KEY)}$", "void_embedding"),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.(level_embed$|encoder\.layers\.)", r"pixel_decoder.\1"),
    (r"^sem_seg_head\.pixel_decoder\.adapter_(\d+)\.", lambda m: f"pixel_decoder.lateral_convs.{int(m[1]) - 1}."),
    (r"^sem_seg_head\.pixel_decoder\.layer_(\d+)\.", lambda m: f"pixel_decoder.output_convs.{int(m[1]) - 1}."),
    (r"^sem_seg_head\.predictor\.static_query\.", "predictor.query_feat."),
    (r"^sem_seg_head\.(pixel_decoder|interaction|predictor)\.", r"\1."),
)


def find_freeseg_prefix(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The prefix (`""`, `"model."`, ...) under which a flat state dict holds the FreeSeg generator, or None."""
    candidates = [key[: -len(_ANCHOR)] for key in state_dict if key == _ANCHOR or key.endswith("." + _ANCHOR)]
    return min(candidates, key=lambda prefix: (prefix not in ("", "model."), len(prefix)), default=None)


def _rename(key: str) -> str:
    for pattern, target in _RENAMES:
        renamed, count = re.subn(pattern, target, key, count=1)
        if count:
            return renamed
    return key


def _count(source: Mapping[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m[1]) for m in map(re.compile(pattern).match, source) if m}
    return max(indices) + 1 if indices else 0


def infer_freeseg_config(source: Mapping[str, torch.Tensor], **config_overrides) -> FreeSegConfig:
    """A [`FreeSegConfig`] whose sizes are read from the renamed generator tensors (`FreeSegModel` names)."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in source:
            raise ValueError(f"The checkpoint's generator has no tensor for {key!r}; cannot infer its size.")
        return tuple(source[key].shape)

    depths = [_count(source, rf"^backbone\.res{stage}\.(\d+)\.") for stage in range(2, 6)]
    bottleneck = shape("backbone.res2.0.conv1.weight")[0]
    groups = bottleneck // shape("backbone.res2.0.conv2.weight")[1]
    class_layers = _count(source, r"^predictor\.class_embed\.layers\.(\d+)\.")
    attention_weights = shape("pixel_decoder.encoder.layers.0.self_attn.attention_weights.weight")[0]
    num_levels = shape("pixel_decoder.level_embed")[0]
    heads = int(config_overrides.get("encoder_attention_heads", FreeSegConfig().encoder_attention_heads))
    inferred = dict(
        num_channels=shape("backbone.stem.conv1.weight")[1],
        stem_out_channels=shape("backbone.stem.conv3.weight")[0],
        depths=depths,
        res2_out_channels=shape("backbone.res2.0.conv3.weight")[0],
        width_per_group=bottleneck // groups,
        num_groups=groups,
        conv_dim=shape("pixel_decoder.mask_features.weight")[1],
        mask_dim=shape("pixel_decoder.mask_features.weight")[0],
        encoder_layers=_count(source, r"^pixel_decoder\.encoder\.layers\.(\d+)\."),
        encoder_ffn_dim=shape("pixel_decoder.encoder.layers.0.linear1.weight")[0],
        encoder_n_points=attention_weights // (heads * num_levels),
        interaction_dim=shape("interaction.attn.q_proj.weight")[0],
        interaction_layer_scale="interaction.gamma" in source,
        hidden_dim=shape("predictor.query_feat.weight")[1],
        num_queries=shape("predictor.query_feat.weight")[0],
        decoder_layers=_count(source, r"^predictor\.transformer_ffn_layers\.(\d+)\."),
        decoder_ffn_dim=shape("predictor.transformer_ffn_layers.0.linear1.weight")[0],
        enforce_input_proj="predictor.input_proj.0.weight" in source,
        text_dim=shape("void_embedding")[-1],
        class_embed_layers=class_layers,
        class_embed_hidden_dim=shape("predictor.class_embed.layers.0.weight")[0] if class_layers > 1 else 0,
    )
    if heads * num_levels * inferred["encoder_n_points"] != attention_weights:
        raise ValueError(
            f"The deformable attention has {attention_weights} attention weights, not a multiple of "
            f"{heads} heads x {num_levels} levels: pass encoder_attention_heads=..."
        )
    return FreeSegConfig(**{**inferred, **config_overrides})


def convert_freeseg_state_dict(
    released_state_dict: Mapping, **config_overrides
) -> tuple[FreeSegConfig, dict[str, torch.Tensor]]:
    """The released checkpoint's generator (flat or nested under `model`) -> `(FreeSegConfig, FreeSegModel state
    dict)`; `config_overrides` set what the tensors cannot tell. Every generator tensor is used exactly once;
    `ValueError` naming missing, unexpected or mis-shaped tensors, or when there is no generator."""
    flat = flatten_tensors(released_state_dict)
    prefix = find_freeseg_prefix(flat)
    if prefix is None:
        heads = sorted({key.split(".", 1)[0] for key in flat})[:8]
        raise ValueError(
            "The checkpoint holds no FreeSeg generator weights (no backbone.* / sem_seg_head.* tensors, e.g. "
            f"{_ANCHOR!r}); its top-level names are {heads}. Convert its IP-CLIP part alone, and take proposals "
            "from another source."
        )
    source = {}
    for key, tensor in flat.items():
        name = key[len(prefix) :]
        if not key.startswith(prefix) or not (name.startswith(GENERATOR_PREFIXES) or name == VOID_KEY):
            continue
        if name.startswith("backbone.") and name.endswith(".num_batches_tracked"):  # trainable-BN checkpoints
            continue
        target = _rename(name)
        if target in source:
            raise ValueError(f"Two released tensors map to {target!r} (the second is {name!r}).")
        source[target] = tensor
    if "void_embedding" not in source:
        raise ValueError(f"The checkpoint has the generator but not its void text embedding {prefix + VOID_KEY!r}.")

    config = infer_freeseg_config(source, **config_overrides)
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in FreeSegModel(config).state_dict().items()}
    mismatched = [
        f"{key}: expected {expected[key]}, found {tuple(source[key].shape)}"
        for key in set(expected) & set(source)
        if tuple(source[key].shape) != expected[key]
    ]
    problems = [
        f"{kind}: {_preview(sorted(names))}"
        for kind, names in [
            ("missing tensors", set(expected) - set(source)),
            ("unexpected tensors", set(source) - set(expected)),
            ("shape mismatches", mismatched),
        ]
        if names
    ]
    if problems:
        raise ValueError("The checkpoint's FreeSeg generator does not match FreeSegModel: " + "; ".join(problems) + ".")
    return config, {key: source[key].detach().clone().contiguous() for key in expected}


def _preview(names: list[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def save_freeseg_generator(
    released_checkpoint, output_dir: str | os.PathLike, unsafe_pickle: bool = False, **config_overrides
) -> str:
    """Write the generator of a released checkpoint (a `.pth` path, read safely unless `unsafe_pickle`, or a loaded
    state dict) as a `FreeSegModel` folder, usable as `"freeseg:<output_dir>"`; returns `output_dir`."""
    if isinstance(released_checkpoint, (str, os.PathLike)):
        from ...hub.official_checkpoint import load_source_checkpoint

        released_checkpoint = load_source_checkpoint(released_checkpoint, unsafe_pickle=unsafe_pickle)
    config, state_dict = convert_freeseg_state_dict(released_checkpoint, **config_overrides)
    model = FreeSegModel(config)
    model.load_state_dict(state_dict, strict=True)
    model.save_pretrained(os.fspath(output_dir), safe_serialization=True)
    return os.fspath(output_dir)
