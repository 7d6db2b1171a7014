"""Shared fixtures: tiny random MAFT models that build offline in milliseconds."""

import copy

import pytest
import torch

import maft_hf  # noqa: F401  (registers the Auto classes)
from maft_hf import MAFTConfig, MaskAwareCLIPVisionConfig

TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
    mask_start_layer=2,
)
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    vocab_size=99,
    max_position_embeddings=32,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)


def tiny_vision_config(**overrides) -> MaskAwareCLIPVisionConfig:
    return MaskAwareCLIPVisionConfig(**{**TINY_VISION, **overrides})


def tiny_maft_config(vision=None, text=None, **overrides) -> MAFTConfig:
    return MAFTConfig(
        vision_config={**TINY_VISION, **(vision or {})},
        text_config={**TINY_TEXT, **(text or {})},
        projection_dim=16,
        **overrides,
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def copy_config():
    return copy.deepcopy
