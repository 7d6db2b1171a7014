"""Which parameters of a `MaskAwareCLIPModel` mask-aware fine-tuning trains, and the AdamW parameter groups.

Policies (`FREEZE_POLICIES`: a parameter trains when one pattern fully matches its `CLIPModel` name, the
`vision_model.` prefix optional):

* `"released"` (default, the authors' code): each vision block's attention projections and `layer_norm1/2`, plus
  the vision `post_layernorm`;
* `"paper"`: the best row of paper Tab. 4d (frozen: patch conv, class and position embeddings, MLPs): also the pre
  layer norm and the visual projection;
* `"all"`: the whole vision tower and the visual projection. The text side is always frozen.
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


def _policy_patterns(policy: str) -> list[re.Pattern]:
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"Unknown freeze policy {policy!r}; expected one of {sorted(FREEZE_POLICIES)}.")
    return [re.compile(p) for p in FREEZE_POLICIES[policy]]


def is_trainable(name: str, policy: str = "released") -> bool:
    """Whether the parameter called `name` (as in `model.named_parameters()`) is trained under `policy`."""
    return any(p.fullmatch(name) for p in _policy_patterns(policy))


def apply_freeze_policy(model: nn.Module, policy: str = "released") -> dict:
    """Set `requires_grad` of every parameter by `policy`; returns `{"trainable": numel, "frozen": numel,
    "trainable_names": [...]}` (names in model order)."""
    patterns = _policy_patterns(policy)
    trainable, frozen, names = 0, 0, []
    for name, param in model.named_parameters():
        train = any(p.fullmatch(name) for p in patterns)
        param.requires_grad_(train)
        if train:
            trainable += param.numel()
            names.append(name)
        else:
            frozen += param.numel()
    if not names:
        raise ValueError(
            f"Freeze policy {policy!r} matched no parameter of {type(model).__name__}; expected a CLIP-style model "
            "with `vision_model.encoder.layers.*` parameters."
        )
    return {"trainable": trainable, "frozen": frozen, "trainable_names": names}


def parameter_groups(model: nn.Module, weight_decay: float = 1e-4) -> list[dict]:
    """AdamW parameter groups of the trainable parameters of `model` (after [`apply_freeze_policy`]): norm layers'
    weights and biases get decay 0 (released `WEIGHT_DECAY_NORM: 0.0`), everything else `weight_decay` (biases too,
    as released). Embeddings, untrained under "released", would be decayed under "paper"/"all" (a simplification)."""
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    norm_params = set()
    for module in model.modules():
        if isinstance(module, norm_types):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if id(param) in norm_params else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("The model has no trainable parameter; call apply_freeze_policy(model, policy) first.")
    return groups
