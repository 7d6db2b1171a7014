"""Which parameters of a `MaskAwareCLIPModel` mask-aware fine-tuning trains, and the AdamW parameter groups.

A parameter trains when one pattern of its policy fully matches its `CLIPModel` name (`vision_model.` optional):
`"released"` (default, the authors' code): each vision block's attention projections and `layer_norm1/2`, plus the
vision `post_layernorm`; `"paper"` (paper Tab. 4d, frozen: patch conv, class and position embeddings, MLPs): also
the pre layer norm and the visual projection; `"all"`: the whole vision tower and the visual projection. The text
side is always frozen.
"""

from __future__ import annotations

import re

from torch import nn

_V = r"(?:vision_model\.)?"
_BLOCK = _V + r"encoder\.layers\.\d+\."
_ATTENTION = _BLOCK + r"self_attn\.(?:q_proj|k_proj|v_proj|out_proj)\.(?:weight|bias)"
_BLOCK_NORMS = _BLOCK + r"layer_norm[12]\.(?:weight|bias)"
_POST_NORM = _V + r"post_layernorm\.(?:weight|bias)"
_PRE_NORM = _V + r"pre_layrnorm\.(?:weight|bias)"
_VISUAL_PROJECTION = r"visual_projection\.weight"

FREEZE_POLICIES: dict[str, tuple[str, ...]] = {
    "released": (_ATTENTION, _BLOCK_NORMS, _POST_NORM),
    "paper": (_ATTENTION, _BLOCK_NORMS, _POST_NORM, _PRE_NORM, _VISUAL_PROJECTION),
    "all": (_V + r"(?:embeddings|pre_layrnorm|encoder|post_layernorm)\..+", _VISUAL_PROJECTION),
}


def is_trainable(name: str, policy: str = "released") -> bool:
    """Whether the parameter called `name` (as in `model.named_parameters()`) is trained under `policy`."""
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"Unknown freeze policy {policy!r}; expected one of {sorted(FREEZE_POLICIES)}.")
    return any(re.fullmatch(pattern, name) for pattern in FREEZE_POLICIES[policy])


def apply_freeze_policy(model: nn.Module, policy: str = "released") -> dict:
    """Set `requires_grad` of every parameter by `policy`; returns `{"trainable": numel, "frozen": numel,
    "trainable_names": [...]}` (names in model order)."""
    numel, names = {True: 0, False: 0}, []
    for name, param in model.named_parameters():
        train = is_trainable(name, policy)
        param.requires_grad_(train)
        numel[train] += param.numel()
        if train:
            names.append(name)
    if not names:
        raise ValueError(
            f"Freeze policy {policy!r} matched no parameter of {type(model).__name__}; expected a CLIP-style model "
            "with `vision_model.encoder.layers.*` parameters."
        )
    return {"trainable": numel[True], "frozen": numel[False], "trainable_names": names}


def parameter_groups(model: nn.Module, weight_decay: float = 1e-4) -> list[dict]:
    """AdamW groups of the trainable parameters: norm layers' weights and biases get decay 0 (released
    `WEIGHT_DECAY_NORM: 0.0`), everything else `weight_decay` (biases too, as released; embeddings, trained only
    under "paper"/"all", too: a simplification)."""
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    norms = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    trainable = [param for param in model.parameters() if param.requires_grad]  # shared parameters once
    if not trainable:
        raise ValueError("The model has no trainable parameter; call apply_freeze_policy(model, policy) first.")
    groups = [
        {"params": [p for p in trainable if id(p) not in norms], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in norms], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]
