"""Loading a MAFT model and its processor for the command lines, with the usual failures (missing folder, no
`config.json`, damaged weights, plain CLIP where MAFT is needed, absent CUDA) as `ValueError`s that say what was found.
"""

from __future__ import annotations

import difflib
import os
import re

import torch

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_device(device: str | torch.device | None) -> torch.device | None:
    """`device` as a `torch.device`; `ValueError` when it names an accelerator this machine does not have."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {str(device)!r} ({err}); expected e.g. 'cpu', 'cuda' or 'cuda:1'.") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and count == 0:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        raise ValueError(
            f"Device {str(device)!r} was asked for, but CUDA is not available here (PyTorch {torch.__version__} "
            f"with {build}, no GPU visible): use --device cpu, or leave --device unset to pick one."
        )
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise ValueError(f"Device {str(device)!r} was asked for, but only {count} CUDA device(s) are visible.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {str(device)!r} was asked for, but MPS is not available here: use --device cpu.")
    return device


def _is_local_checkpoint(name_or_path: str) -> bool:
    """True for a checkpoint folder, False for a Hub id; `ValueError` for anything else, with close names."""
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            found = ", ".join(sorted(os.listdir(name_or_path))[:10]) or "nothing"
            raise ValueError(
                f"{name_or_path!r} is a folder but not a model checkpoint: it has no config.json (it holds {found})."
            )
        return True
    if os.path.exists(name_or_path):
        raise ValueError(f"{name_or_path!r} is a file; expected a checkpoint folder (with config.json) or a Hub id.")
    if _HUB_ID.match(name_or_path) and not os.path.isdir(name_or_path.split("/")[0]):
        return False
    parent = os.path.dirname(os.path.abspath(os.path.expanduser(name_or_path)))
    names = os.listdir(parent) if os.path.isdir(parent) else []
    near = difflib.get_close_matches(os.path.basename(os.path.normpath(name_or_path)), names, n=3)
    raise ValueError(
        f"The model folder {name_or_path!r} does not exist (looked for {os.path.abspath(name_or_path)})"
        + (f"; similar names there: {', '.join(near)}" if near else "")
        + ". Hub models are given as 'org/name'."
    )


def _check_weight_files(folder: str) -> None:
    from safetensors import safe_open

    for path in sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".safetensors")):
        try:
            with safe_open(path, framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(
                f"The weights file {path} is damaged ({err}; {os.path.getsize(path):,} bytes): it was probably "
                "cut short by an interrupted download or copy. Download or save the checkpoint again."
            ) from None


def load_model_and_processor(
    name_or_path: str,
    local_files_only: bool | None = None,
    mask_start_layer: int | None = None,
    input_image_size: int | None = None,
    *,
    device: str | torch.device | None = None,
    allow_clip: bool = True,
):
    """`(MaskAwareCLIPModel in eval mode on device, MAFTProcessor)` of a MAFT checkpoint (Hub id or folder), or of a
    plain CLIP checkpoint converted in memory when `allow_clip` (the overrides apply to CLIP checkpoints only)."""
    from transformers import PretrainedConfig

    from ..model.modeling_maft import MaskAwareCLIPModel
    from ..model.processing_maft import MAFTProcessor
    from .conversion import load_clip_as_maft, pretrained_options

    device = check_device(device)
    local = _is_local_checkpoint(os.fspath(name_or_path))
    options = pretrained_options(local_files_only)
    try:
        model_type = PretrainedConfig.get_config_dict(name_or_path, **options)[0].get("model_type")
    except OSError as err:
        raise ValueError(f"Cannot read the config of {name_or_path!r}: {err}") from None
    if model_type == "clip" and not allow_clip:
        raise ValueError(
            f"{name_or_path!r} is a plain CLIP checkpoint (model_type 'clip'), not a MAFT checkpoint with a "
            f"processor. Convert it first: python scripts/convert_clip_checkpoint.py --clip {name_or_path} "
            "--output_dir maft-init (the un-fine-tuned baseline), or fine-tune it with scripts/finetune.py."
        )
    if model_type not in ("maft", "clip"):
        raise ValueError(
            f"Expected a MAFT (model_type 'maft') or CLIP (model_type 'clip') checkpoint; {name_or_path!r} has "
            f"model_type {model_type!r}."
        )
    if model_type == "maft" and (mask_start_layer is not None or input_image_size is not None):
        raise ValueError(
            "mask_start_layer / input_image_size overrides apply to plain CLIP checkpoints only; "
            f"{name_or_path!r} is already a MAFT checkpoint."
        )
    if local:
        _check_weight_files(name_or_path)
    try:
        if model_type == "clip":
            model, processor = load_clip_as_maft(name_or_path, mask_start_layer, input_image_size, local_files_only)
        else:
            model = MaskAwareCLIPModel.from_pretrained(name_or_path, **options)
            processor = MAFTProcessor.from_pretrained(name_or_path, **options)
    except OSError as err:
        raise ValueError(f"Cannot load the MAFT checkpoint {name_or_path!r}: {err}") from err
    model.eval()
    return (model.to(device) if device is not None else model), processor


def load_proposal_generator(spec: str, options=None, offline: bool = False, device=None):
    """The proposal generator of a command-line spec (`"mask2former:<ckpt>"`, `"grid:4"`, ...) and its options."""
    from ..proposals import load_proposal_generator as build
    from ..proposals.factory import parse_proposal_spec

    options = dict(options or {})
    if parse_proposal_spec(spec)[0] != "grid":
        options = {"device": device, **({"local_files_only": True} if offline else {}), **options}
    try:
        return build(spec, **options)
    except OSError as err:
        raise ValueError(f"Cannot load the proposal generator {spec!r}: {err}") from err
