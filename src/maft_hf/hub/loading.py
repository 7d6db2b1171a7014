"""Loading what a command line names: a MAFT checkpoint and its processor, and a proposal generator (one home for
the evaluate and segment commands). Errors become `ValueError`s that name what could not be loaded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def load_model_and_processor(name: str, offline: bool = False, device=None):
    """`(MaskAwareCLIPModel in eval mode, MAFTProcessor)` of a local directory or Hub id (moved to `device` if
    given); `offline` reads local files and the Hub cache only."""
    from ..model.modeling_maft import MaskAwareCLIPModel
    from ..model.processing_maft import MAFTProcessor

    try:
        model = MaskAwareCLIPModel.from_pretrained(name, local_files_only=offline)
        processor = MAFTProcessor.from_pretrained(name, local_files_only=offline)
    except OSError as err:
        raise ValueError(f"Cannot load the MAFT checkpoint {name!r}: {err}") from err
    return (model if device is None else model.to(device)).eval(), processor


def load_proposal_generator(spec: str, options: Mapping[str, Any] | None = None, offline: bool = False, device=None):
    """The proposal generator of a command-line spec (`"mask2former:<ckpt>"`, `"sam:<ckpt>"`, `"grid:4"`, ...) with
    its `KEY=VALUE` options; checkpoints are loaded on `device`, from local files only when `offline`."""
    from ..proposals import load_proposal_generator as build
    from ..proposals.factory import parse_proposal_spec

    kind, _ = parse_proposal_spec(spec)
    options = dict(options or {})
    if kind != "grid":
        options = {"device": device, **({"local_files_only": True} if offline else {}), **options}
    try:
        return build(spec, **options)
    except OSError as err:
        raise ValueError(f"Cannot load the proposal generator {spec!r}: {err}") from err


__all__ = ["load_model_and_processor", "load_proposal_generator"]
