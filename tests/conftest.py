"""Shared fixtures: tiny random MAFT models that build offline in milliseconds (see maft_hf.testing)."""

import pytest
import torch

import maft_hf  # noqa: F401  (registers the Auto classes)
from maft_hf.testing import (  # noqa: F401  (re-exported for the tests)
    TINY_TEXT,
    TINY_VISION,
    build_tiny_checkpoint,
    build_tiny_tokenizer,
    tiny_maft_config,
    tiny_vision_config,
)


# Tiny models are dominated by thread hand-offs: one thread keeps the suite fast on a loaded 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_tokenizer():
    """A character-level CLIP tokenizer whose ids fit the tiny text tower (bos 0, eos/pad 1)."""
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """Directory of a saved tiny MaskAwareCLIPModel with its MAFTProcessor."""
    return build_tiny_checkpoint(tmp_path / "tiny-maft")
