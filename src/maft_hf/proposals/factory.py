"""Build a proposal source from a spec string `"kind:argument"` (`mask2former:<id>`, `sam:<id>`, `grid:<k>`...: the
table in docs/proposals.md). Local paths load offline; for Hub ids set `HF_HUB_OFFLINE=1` or `local_files_only=True`."""

from __future__ import annotations

import importlib
import json

from transformers import AutoConfig

from ..hub.conversion import pretrained_options
from . import ProposalGenerator

SPEC_KINDS = ("mask2former", "oneformer", "universal", "sam", "grid", "kmeans", "freeseg")
# kind -> class (a lazy export of maft_hf.proposals); the other kinds are universal segmentation
_CLASSES = dict(sam="SAMProposals", grid="GridProposals", kmeans="ColorClusterProposals", freeseg="FreeSegProposals")


def parse_proposal_spec(spec: str) -> tuple[str, str]:
    """`"kind:argument"` -> `(kind, argument)`; only the first colon splits (Windows paths keep theirs)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"Expected a spec 'kind:argument' with kind in {SPEC_KINDS}, got {spec!r}.")
    kind, argument = spec.split(":", 1)
    kind, argument = kind.strip().lower(), argument.strip()
    if kind not in SPEC_KINDS:
        raise ValueError(f"Unknown proposal source {kind!r} in {spec!r}; expected one of {SPEC_KINDS}.")
    if not argument:
        raise ValueError(f"The spec {spec!r} names no checkpoint / grid size after '{kind}:'.")
    return kind, argument


def parse_proposal_options(items: list[str]) -> dict:
    """Command-line `KEY=VALUE` options, values parsed as JSON, else strings: `["k=32", "device=cpu"]` -> `{"k": 32,
    "device": "cpu"}`."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--proposal_option expects KEY=VALUE, got {item!r}.")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def load_proposal_generator(spec: str, **kwargs) -> ProposalGenerator:
    """Build the proposal source a spec names (module docstring); keyword arguments go to its constructor.

    Example:

    ```python
    >>> generator = load_proposal_generator("grid:4")
    >>> generator = load_proposal_generator("sam:./sam-vit-base", points_per_side=16, local_files_only=True)
    ```"""
    kind, argument = parse_proposal_spec(spec)
    if kind in ("grid", "kmeans"):
        try:
            argument = int(argument)
        except ValueError:
            raise ValueError(f"'{kind}:<k>' needs an integer k, got {argument!r}.") from None
        kwargs.pop("local_files_only", None)  # weight-free: nothing to load or place
        kwargs.pop("device", None)
    elif kind in ("mask2former", "oneformer"):  # check the model type from the config before loading any weights
        options = pretrained_options(kwargs.get("local_files_only"))
        model_type = AutoConfig.from_pretrained(argument, **options).model_type
        if model_type != kind:
            raise ValueError(
                f"The spec {spec!r} asks for a {kind} checkpoint, but {argument!r} is a {model_type!r} model."
            )
    class_name = _CLASSES.get(kind, "UniversalSegmentationProposals")
    return getattr(importlib.import_module(__package__), class_name)(argument, **kwargs)
