"""A tiny random FreeSeg generator that builds offline in milliseconds (tests, docs, demos; never for results)."""

from __future__ import annotations

import os

from .configuration_freeseg import FreeSegConfig

TINY_FREESEG = {  # by part: backbone, pixel decoder and text interaction, decoder, class head and input
    **dict(stem_out_channels=16, depths=[1, 1, 1, 1], res2_out_channels=32, width_per_group=8, res5_multi_grid=[1]),
    **dict(conv_dim=32, mask_dim=32, norm_num_groups=8, encoder_layers=1, encoder_attention_heads=4),
    **dict(encoder_n_points=2, encoder_ffn_dim=48, interaction_dim=64, interaction_heads=4),
    **dict(hidden_dim=32, decoder_layers=3, decoder_attention_heads=4, decoder_ffn_dim=64, num_queries=10),
    **dict(text_dim=16, class_embed_hidden_dim=24, test_short_side=64, test_max_size=256),
}


def tiny_freeseg_config(**overrides) -> FreeSegConfig:
    """A FreeSeg config with ResNet blocks [1, 1, 1, 1], 32-wide decoder, 10 queries, 16-d text, short side 64."""
    return FreeSegConfig(**{**TINY_FREESEG, **overrides})


def build_tiny_freeseg(directory: str | os.PathLike, seed: int = 0, **overrides) -> str:
    """Save a tiny random `FreeSegModel` to `directory` (loads with `"freeseg:<directory>"`); returns the directory."""
    import torch

    from .modeling_freeseg import FreeSegModel

    torch.manual_seed(seed)
    FreeSegModel(tiny_freeseg_config(**overrides)).save_pretrained(directory)
    return os.fspath(directory)
