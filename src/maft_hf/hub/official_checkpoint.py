"""Convert a checkpoint of the authors' released MAFT models into a MAFT checkpoint directory.

The release (detectron2 pickle) holds CLIP image encoders in OpenAI names: the fine-tuned one at `model.IPCLIP.` and
frozen copies of the base CLIP, which gives the text tower, config and tokenizer. Every source tensor is used once,
shapes are checked against the CLIP config, and the image embeddings against [`openai_visual_forward`]."""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.safe_pickle import NUMPY_ARRAY_GLOBALS, RefusedGlobalError, load_plain_pickle

logger = logging.getLogger(__name__)
StateDict = Mapping[str, torch.Tensor]

# The keys whose joint presence under a prefix marks an OpenAI-layout CLIP image encoder.
ANCHOR_KEYS = ("conv1.weight", "class_embedding", "positional_embedding")
# Containers searched first when a pickle nests its state dict (detectron2: "model"; Lightning: "state_dict").
PREFERRED_CONTAINERS = ("model", "state_dict")

_STEMS = {  # per tower: OpenAI name -> transformers name of the tensors outside the blocks (projections transposed)
    "visual": {
        "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "class_embedding": "vision_model.embeddings.class_embedding",
        "positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "ln_post.weight": "vision_model.post_layernorm.weight",
        "ln_post.bias": "vision_model.post_layernorm.bias",
        "proj": "visual_projection.weight",
    },
    "text": {
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
        "text_projection": "text_projection.weight",
    },
}
_ENCODERS = {"visual": "vision_model.encoder", "text": "text_model.encoder"}
_PROJECTIONS = ("proj", "text_projection")
_BLOCK = {  # same layout on both sides
    f"{src}.{kind}": f"{dst}.{kind}"
    for src, dst in [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("mlp.c_fc", "mlp.fc1")]
    + [("mlp.c_proj", "mlp.fc2"), ("ln_2", "layer_norm2")]
    for kind in ("weight", "bias")
}
_IN_PROJ = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}  # packed q, k, v (nn.MultiheadAttention)
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
# Parameters the released fine-tuning leaves frozen (DESIGN section 2): they should equal the base CLIP's.
_FROZEN_HF = re.compile(
    r"^(vision_model\.embeddings\..*|vision_model\.pre_layrnorm\..*|vision_model\.encoder\.layers\.\d+\.mlp\..*"
    r"|visual_projection\.weight)$"
)


def flatten_tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor (or NumPy array, as a tensor) of a nested checkpoint, keyed by its dotted path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten_tensors(value, f"{prefix}{key}."))
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif type(obj).__module__ == "numpy" and hasattr(obj, "dtype") and hasattr(obj, "shape"):
        out[prefix[:-1]] = torch.as_tensor(obj)
    return out


def _load_pickle(path: str, safe: bool):
    """`torch.load(weights_only=safe)` allowing NumPy arrays, else a plain unpickler (`safe`: arrays and containers)."""
    try:
        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # plain pickles: handled below
            return torch.load(path, map_location="cpu", weights_only=safe)
    except Exception:  # noqa: BLE001 - not a torch.save archive: a plain pickle
        if zipfile.is_zipfile(path):
            raise
    with open(path, "rb") as f:
        if not safe:
            return pickle.load(f)  # noqa: S301 - explicitly allowed by unsafe_pickle
        try:
            return load_plain_pickle(f)
        except RefusedGlobalError:
            raise  # more than plain data: `unsafe_pickle` may read it
        except Exception as err:
            raise ValueError(f"{path!r} is not a readable checkpoint (truncated or corrupt?): {err!r}") from err


def load_source_checkpoint(path: str | os.PathLike, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A released checkpoint (`.pth`/`.pt`/`.pkl` or `.safetensors`) as a flat `{dotted key: tensor}`, read without
    running code; a file that needs more raises `ValueError` unless `unsafe_pickle=True` (trusted files only)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file {path!r} does not exist.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = _load_pickle(path, safe=True)
    except pickle.UnpicklingError as err:
        if not unsafe_pickle:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = next((line for line in lines if "global" in line.lower()), lines[0] if lines else "")
            raise ValueError(
                f"{path!r} cannot be read safely (torch.load(weights_only=True), or an unpickler of containers and "
                f"NumPy arrays for plain pickles): it holds other objects ({detail}). If you trust the file, pass "
                "unsafe_pickle=True (--unsafe_pickle), which lets the pickle run arbitrary code."
            ) from err
        warnings.warn(
            f"Loading {path!r} with torch.load(weights_only=False): the pickle can run arbitrary code. "
            "Only do this for files you trust.",
            stacklevel=2,
        )
        obj = _load_pickle(path, safe=False)
    if hasattr(obj, "state_dict") and not isinstance(obj, Mapping):  # a pickled nn.Module (unsafe path only)
        obj = obj.state_dict()
    return flatten_tensors(obj)


def find_visual_prefixes(state_dict: StateDict) -> list[str]:
    """Every prefix holding an OpenAI-layout image encoder ([`ANCHOR_KEYS`]), those under `model.` first."""
    prefixes = {key[: -len(ANCHOR_KEYS[0])] for key in state_dict if f".{key}".endswith("." + ANCHOR_KEYS[0])}
    prefixes = [prefix for prefix in prefixes if all(prefix + anchor in state_dict for anchor in ANCHOR_KEYS)]
    order = {name: i for i, name in enumerate(PREFERRED_CONTAINERS)}
    return sorted(prefixes, key=lambda p: (order.get(p.split(".", 1)[0], len(order)), p))


def strip_prefix(state_dict: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def expected_openai_visual_shapes(vision_config, projection_dim: int) -> dict[str, tuple[int, ...]]:
    """OpenAI name -> shape of every tensor of a CLIP image encoder with this transformers vision config."""
    d, i, p = vision_config.hidden_size, vision_config.intermediate_size, vision_config.patch_size
    g = vision_config.image_size // p
    shapes = {"conv1.weight": (d, vision_config.num_channels, p, p), "class_embedding": (d,)}
    shapes.update({"positional_embedding": (1 + g * g, d), "ln_pre.weight": (d,), "ln_pre.bias": (d,)})
    block = {name: (d,) for name in _BLOCK}  # layer norms and biases
    block.update({"attn.out_proj.weight": (d, d), "mlp.c_fc.weight": (i, d), "mlp.c_fc.bias": (i,)})
    block.update({"mlp.c_proj.weight": (d, i), "attn.in_proj_weight": (3 * d, d), "attn.in_proj_bias": (3 * d,)})
    for layer in range(vision_config.num_hidden_layers):
        shapes.update({f"transformer.resblocks.{layer}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_post.weight": (d,), "ln_post.bias": (d,), "proj": (d, projection_dim)})
    return shapes


def _layer_count(names) -> int:
    indices = {int(m.group(1)) for m in map(_RESBLOCK.match, names) if m}
    return max(indices) + 1 if indices else 0


def _squeeze_position(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if name == "positional_embedding" and tensor.ndim == 3 and tensor.shape[0] == 1:
        return tensor[0]
    return tensor


def _preview(items, limit: int = 12) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def check_openai_visual(source: StateDict, vision_config, projection_dim: int, allow_unused: bool = False) -> list[str]:
    """Check an OpenAI-layout image encoder (prefix stripped) against a CLIP vision config; `ValueError` lists every
    missing, mis-shaped and (unless `allow_unused`) unused tensor. Returns the unused names."""
    expected = expected_openai_visual_shapes(vision_config, projection_dim)
    grid = vision_config.image_size // vision_config.patch_size
    problems = []
    layers = _layer_count(source)
    if layers != vision_config.num_hidden_layers:
        problems.append(
            f"the checkpoint has {layers} transformer.resblocks, the CLIP config {vision_config.num_hidden_layers}"
        )
    missing = [name for name in expected if name not in source]
    if missing:
        problems.append(f"missing tensors: {_preview(missing)}")
    shapes = {name: tuple(_squeeze_position(name, source[name]).shape) for name in expected if name in source}
    mismatched = [name for name, shape in shapes.items() if shape != expected[name]]
    if mismatched:
        found = [f"{name}: expected {expected[name]}, found {tuple(source[name].shape)}" for name in mismatched]
        problems.append("shapes that do not match the CLIP config: " + _preview(found))
        if "positional_embedding" in shapes and "conv1.weight" not in mismatched:
            side = math.isqrt(shapes["positional_embedding"][0] - 1)
            if side * side == shapes["positional_embedding"][0] - 1 and side != grid:
                problems.append(
                    f"the position embeddings are for a {side}x{side} grid ({side * vision_config.patch_size} px), "
                    f"the config's for {vision_config.image_size} px: the release keeps the pre-training grid"
                )
    unused = sorted(name for name in source if name not in expected)
    if unused and not allow_unused:
        problems.append(f"tensors the mapping does not use (pass allow_unused=True to skip them): {_preview(unused)}")
    if problems:
        raise ValueError(
            "The checkpoint's CLIP image encoder does not match the CLIP config (hidden_size "
            f"{vision_config.hidden_size}, intermediate_size {vision_config.intermediate_size}, "
            f"{vision_config.num_hidden_layers} layers, patch {vision_config.patch_size}, {grid}x{grid} grid, "
            f"projection {projection_dim}): " + "; ".join(problems) + ". Is the CLIP checkpoint the one MAFT was "
            "fine-tuned from?"
        )
    return unused


def openai_to_transformers(source: StateDict, tower: str = "visual", dtype=torch.float32) -> dict[str, torch.Tensor]:
    """An OpenAI-layout image (`tower="visual"`) or text tower, prefix stripped, in transformers names: packed q/k/v
    split, projections transposed; tensors the mapping does not know are skipped."""
    stem, encoder, out = _STEMS[tower], _ENCODERS[tower], {}
    for name, tensor in source.items():
        block = _RESBLOCK.match(name)
        layer, part = block.groups() if block else (None, None)
        if name in stem:
            tensor = _squeeze_position(name, tensor)
            out[stem[name]] = tensor.t() if name in _PROJECTIONS else tensor
        elif part in _BLOCK:
            out[f"{encoder}.layers.{layer}.{_BLOCK[part]}"] = tensor
        elif part in _IN_PROJ:
            for proj, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                out[f"{encoder}.layers.{layer}.self_attn.{proj}_proj.{_IN_PROJ[part]}"] = chunk
    return {name: tensor.to(dtype).contiguous() for name, tensor in out.items()}


def openai_visual_forward(source: StateDict, pixel_values, num_heads: int, activation=None, eps=1e-5) -> torch.Tensor:
    """Image embeddings `(batch, P)` of an OpenAI-layout image encoder computed from its tensors, for `pixel_values
    (batch, 3, S, S)` at its native size; `activation` defaults to QuickGELU."""
    act = activation or (lambda t: t * torch.sigmoid(1.702 * t))
    w = {k: v.float() for k, v in source.items()}
    patch = w["conv1.weight"].shape[-1]
    x = F.conv2d(pixel_values.float(), w["conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    cls = w["class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + _squeeze_position("positional_embedding", w["positional_embedding"])
    d = x.shape[-1]
    x = F.layer_norm(x, (d,), w["ln_pre.weight"], w["ln_pre.bias"], eps)
    for layer in range(_layer_count(w)):
        b = f"transformer.resblocks.{layer}."
        h = F.layer_norm(x, (d,), w[b + "ln_1.weight"], w[b + "ln_1.bias"], eps).transpose(0, 1)  # (L, B, D)
        attn, _ = F.multi_head_attention_forward(
            *(h, h, h, d, num_heads, w[b + "attn.in_proj_weight"], w[b + "attn.in_proj_bias"], None, None, False, 0.0),
            *(w[b + "attn.out_proj.weight"], w[b + "attn.out_proj.bias"]),
            training=False,
            need_weights=False,
        )
        x = x + attn.transpose(0, 1)
        h = F.layer_norm(x, (d,), w[b + "ln_2.weight"], w[b + "ln_2.bias"], eps)
        h = F.linear(act(F.linear(h, w[b + "mlp.c_fc.weight"], w[b + "mlp.c_fc.bias"])), w[b + "mlp.c_proj.weight"])
        x = x + h + w[b + "mlp.c_proj.bias"]
    return F.layer_norm(x[:, 0], (d,), w["ln_post.weight"], w["ln_post.bias"], eps) @ w["proj"]


@dataclass
class OfficialConversionReport:
    """What the conversion read, wrote and checked (`frozen_changed`: changed tensors MAFT keeps frozen, should be
    empty; `*_max_abs_diff`: None when not measured)."""

    prefix: str
    candidates: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    outside_encoder: int = 0
    source_dtypes: list[str] = field(default_factory=list)
    changed_from_base: list[str] = field(default_factory=list)
    frozen_changed: list[str] = field(default_factory=list)
    text_tower_max_abs_diff: float | None = None
    verify_max_abs_diff: float | None = None

    def summary(self) -> str:
        lines = [
            f"image encoder at prefix {self.prefix!r} ({len(self.used)} tensors, each used once; dtypes "
            f"{', '.join(self.source_dtypes)}); {self.outside_encoder} other tensors in the file were not needed",
            f"{len(self.changed_from_base)} converted tensors differ from the base CLIP"
            + (f"; frozen ones among them: {_preview(self.frozen_changed, 5)}" if self.frozen_changed else ""),
        ]
        if self.unused:
            lines.append(f"skipped {len(self.unused)} unused tensors under the prefix: {_preview(self.unused, 5)}")
        if self.text_tower_max_abs_diff is not None:
            lines.append(f"stored text tower vs base CLIP: max |diff| {self.text_tower_max_abs_diff:.3g}")
        if self.verify_max_abs_diff is not None:
            lines.append(f"verified against the OpenAI-layout forward: max |diff| {self.verify_max_abs_diff:.3g}")
        return "\n".join(lines)


def select_visual_prefix(state_dict: StateDict, prefix=None, base: StateDict | None = None) -> tuple[str, list[str]]:
    """`(prefix, candidates)` of the fine-tuned image encoder. Without `prefix`, copies equal to the base CLIP (`base`:
    its transformers state dict) are dropped; unless exactly one encoder is left, `ValueError` lists the candidates."""
    candidates = find_visual_prefixes(state_dict)
    if prefix is not None:
        prefix = prefix if prefix.endswith(".") or not prefix else prefix + "."
        if not all(prefix + anchor in state_dict for anchor in ANCHOR_KEYS):
            raise ValueError(
                f"No CLIP image encoder under prefix {prefix!r} (expected {prefix}conv1.weight, "
                f"{prefix}class_embedding, {prefix}positional_embedding); found encoders at {candidates or 'none'}."
            )
        return prefix, candidates
    if not candidates:
        examples = _preview(sorted(state_dict)[:8], 8) if state_dict else "none"
        raise ValueError(
            "The checkpoint holds no CLIP image encoder in OpenAI naming: no '<prefix>conv1.weight' with "
            f"'<prefix>class_embedding' and '<prefix>positional_embedding' beside it ({len(state_dict)} tensors; "
            f"first keys: {examples})."
        )
    if len(candidates) == 1:
        return candidates[0], candidates
    if base is not None:
        tuned = [c for c in candidates if not _equals_base(strip_prefix(state_dict, c), base)]
        if len(tuned) == 1:
            logger.info("Image encoders at %s; taking %r, the only one unlike the base.", candidates, tuned[0])
            return tuned[0], candidates
    raise ValueError(f"The checkpoint holds several CLIP image encoders, at {candidates}; pass prefix= (--prefix).")


def _equals_base(source: StateDict, base: StateDict) -> bool:
    """Whether an encoder's patch embedding and attention in-projections (MAFT trains these) equal the base's."""
    compared = {n: t for n, t in source.items() if n == "conv1.weight" or n.endswith("attn.in_proj_weight")}
    pairs = [(t, base[n]) for n, t in openai_to_transformers(compared).items() if n in base]
    return bool(pairs) and all(t.shape == b.shape and torch.equal(t, b.float()) for t, b in pairs)


def _compare_text_tower(flat, base, clip_name_or_path: str) -> float | None:
    """Largest difference between the release's one stored text tower and the base's; None without one."""
    roots = [k[: -len("token_embedding.weight")] for k in flat if k.endswith("token_embedding.weight")]
    if len(roots) != 1:
        return None
    text = openai_to_transformers(strip_prefix(flat, roots[0]), tower="text")
    shared = [k for k in text if k in base and text[k].shape == base[k].shape]
    diff = max(((text[k] - base[k]).abs().max().item() for k in shared), default=None)
    if diff is not None and diff > 1e-6:
        logger.warning(
            "The checkpoint's text tower differs from %r's by up to %.3g; MAFT keeps the text tower frozen, so the "
            "base is probably not the one it was fine-tuned from; the base's is used.",
            clip_name_or_path,
            diff,
        )
    return diff


def _verify(model, encoder, vision, atol: float) -> float:
    from transformers.activations import ACT2FN

    model.eval()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, vision.num_channels, vision.image_size, vision.image_size, generator=generator)
    with torch.no_grad():
        ours = model.get_image_features(pixel_values=pixels).pooler_output
        act = ACT2FN[vision.hidden_act]
        reference = openai_visual_forward(encoder, pixels, vision.num_attention_heads, act, vision.layer_norm_eps)
    diff = (ours - reference).abs().max().item()
    if not diff <= atol:
        raise ValueError(
            f"The converted model's image embeddings differ from the OpenAI-layout forward of the source weights by "
            f"{diff:.3g} (> atol {atol}); nothing was written."
        )
    return diff


def convert_official_checkpoint(
    checkpoint_path: str | os.PathLike | StateDict,
    clip_name_or_path: str,
    output_dir: str | os.PathLike,
    *,
    prefix: str | None = None,
    mask_start_layer: int | None = None,
    input_image_size: int | None = None,
    local_files_only: bool = False,
    unsafe_pickle: bool = False,
    allow_unused: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
    push_to_hub: bool = False,
    hub_model_id: str | None = None,
    token: str | None = None,
):
    """Convert a released MAFT checkpoint (a path, or the flat state dict of [`load_source_checkpoint`]) into a MAFT
    checkpoint directory; returns `(model, report)`.

    `clip_name_or_path` is the `CLIPModel` it was fine-tuned from (text tower, config, tokenizer); `prefix` is found
    automatically when None; `verify` compares the image embeddings with [`openai_visual_forward`] (`ValueError` above
    `atol`). `output_dir` is written only after every check passed.
    """
    from transformers import CLIPConfig

    from .conversion import load_clip_as_maft, upload_checkpoint

    config = CLIPConfig.from_pretrained(clip_name_or_path, local_files_only=local_files_only)
    vision = config.vision_config
    if isinstance(checkpoint_path, Mapping):
        flat = checkpoint_path
    else:
        flat = load_source_checkpoint(checkpoint_path, unsafe_pickle=unsafe_pickle)
    chosen = None
    if prefix is not None or len(find_visual_prefixes(flat)) <= 1:  # fail before loading the base weights
        chosen, candidates = select_visual_prefix(flat, prefix)
        check_openai_visual(strip_prefix(flat, chosen), vision, config.projection_dim, allow_unused=allow_unused)

    model, processor = load_clip_as_maft(clip_name_or_path, mask_start_layer, input_image_size, local_files_only)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if chosen is None:
        chosen, candidates = select_visual_prefix(flat, None, base)
    source = strip_prefix(flat, chosen)
    unused = check_openai_visual(source, vision, config.projection_dim, allow_unused=allow_unused)
    encoder = {k: v for k, v in source.items() if k not in set(unused)}
    converted = openai_to_transformers(encoder)
    model.load_state_dict(base | converted)  # strict: a converted name the model lacks raises

    changed = sorted(k for k in converted if not torch.equal(converted[k], base[k].to(converted[k].dtype)))
    report = OfficialConversionReport(
        prefix=chosen,
        candidates=candidates,
        used=sorted(encoder),
        unused=unused,
        outside_encoder=len(flat) - len(source),
        source_dtypes=sorted({str(t.dtype).replace("torch.", "") for t in encoder.values()}),
        changed_from_base=changed,
        frozen_changed=[k for k in changed if _FROZEN_HF.match(k)],
        text_tower_max_abs_diff=_compare_text_tower(flat, base, clip_name_or_path),
    )
    if not changed:
        logger.warning("The converted image encoder equals the base CLIP's: is this a fine-tuned checkpoint?")
    if report.frozen_changed:
        logger.warning(
            "Tensors that MAFT keeps frozen differ from the base CLIP (%s): check that %r is the checkpoint the model "
            "was fine-tuned from.",
            _preview(report.frozen_changed, 5),
            clip_name_or_path,
        )
    if verify:
        report.verify_max_abs_diff = _verify(model, encoder, vision, atol)

    with tempfile.TemporaryDirectory(prefix="maft_official_") as work:  # complete before anything is written
        model.save_pretrained(work)
        processor.save_pretrained(work)
        os.makedirs(output_dir, exist_ok=True)
        shutil.copytree(work, output_dir, dirs_exist_ok=True)
    if push_to_hub:
        upload_checkpoint(output_dir, hub_model_id, token, "Convert the released MAFT checkpoint")
    return model, report
