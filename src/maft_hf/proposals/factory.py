"""Build a proposal source from a spec string `"kind:argument"`:

- `"mask2former:<id_or_path>"`, `"oneformer:<id_or_path>"` (model type checked), `"universal:<id_or_path>"`:
  [`UniversalSegmentationProposals`];
- `"sam:<id_or_path>"`: [`SAMProposals`]; `"freeseg:<folder>"`: [`FreeSegProposals`], the released MAFT generator;
- `"grid:<k>"`: [`GridProposals`]; `"kmeans:<k>"`: [`ColorClusterProposals`] (no weights, offline demos).

Local paths load offline; for Hub ids set `HF_HUB_OFFLINE=1` or pass `local_files_only=True`.
"""

from __future__ import annotations

from . import ProposalGenerator

SPEC_KINDS = ("mask2former", "oneformer", "universal", "sam", "grid", "kmeans", "freeseg")


def parse_proposal_spec(spec: str) -> tuple[str, str]:
    """`"kind:argument"` -> `(kind, argument)`; only the first colon splits (Windows paths keep theirs)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"Expected a spec 'kind:argument' with kind in {SPEC_KINDS}, got {spec!r}.")
    kind, argument = spec.split(":", 1)
    kind = kind.strip().lower()
    if kind not in SPEC_KINDS:
        raise ValueError(f"Unknown proposal source {kind!r} in {spec!r}; expected one of {SPEC_KINDS}.")
    if not argument.strip():
        raise ValueError(f"The spec {spec!r} names no checkpoint / grid size after '{kind}:'.")
    return kind, argument.strip()


def parse_proposal_options(items: list[str]) -> dict:
    """Command-line `KEY=VALUE` options (values parsed as JSON, else strings): `["k=32", "device=cpu"]` ->
    `{"k": 32, "device": "cpu"}`."""
    import json

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
        from .cluster import ColorClusterProposals
        from .grid import GridProposals

        try:
            k = int(argument)
        except ValueError:
            raise ValueError(f"'{kind}:<k>' needs an integer k, got {argument!r}.") from None
        for loader_only in ("local_files_only", "device"):  # weight-free: nothing to load or place
            kwargs.pop(loader_only, None)
        return (GridProposals if kind == "grid" else ColorClusterProposals)(k, **kwargs)
    if kind == "sam":
        from .sam import SAMProposals

        return SAMProposals(argument, **kwargs)
    if kind == "freeseg":
        from .freeseg.generator import FreeSegProposals

        return FreeSegProposals(argument, **kwargs)
    if kind != "universal":  # check the model type from the config before loading any weights
        from transformers import AutoConfig

        from ..hub.conversion import pretrained_options

        options = pretrained_options(kwargs.get("local_files_only"))
        model_type = getattr(AutoConfig.from_pretrained(argument, **options), "model_type", None)
        if model_type != kind:
            raise ValueError(
                f"The spec {spec!r} asks for a {kind} checkpoint, but {argument!r} is a {model_type!r} model."
            )
    from .universal import UniversalSegmentationProposals

    return UniversalSegmentationProposals(argument, **kwargs)
