"""FreeSeg: the released MAFT models' proposal generator (DeepLab ResNet-101 + Mask2Former with text interaction).

See `docs/freeseg.md`. `FreeSegModel` is the network, `FreeSegProposals` the proposal source (spec
`"freeseg:<folder>"`), `convert_freeseg_state_dict` / `save_freeseg_generator` convert the released checkpoint.
"""

from __future__ import annotations

_LAZY_EXPORTS = {
    **dict.fromkeys(("FREESEG_PIXEL_MEAN", "FREESEG_PIXEL_STD", "FreeSegConfig"), ".configuration_freeseg"),
    **dict.fromkeys(("FreeSegModel", "FreeSegOutput"), ".modeling_freeseg"),
    **dict.fromkeys(("CanvasProposals", "FreeSegProposals", "load_freeseg_model"), ".generator"),
    **dict.fromkeys(("convert_freeseg_state_dict", "find_freeseg_prefix", "save_freeseg_generator"), ".conversion"),
}
__all__ = list(_LAZY_EXPORTS)


def __getattr__(name):
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
