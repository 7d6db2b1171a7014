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


# ---- End-to-end segmentation fixtures (scripts/segment.py, examples/): saved once per session, loaded by path ----
@pytest.fixture(scope="session")
def varied_tiny_checkpoint(tmp_path_factory):
    """A tiny MAFT checkpoint whose vision weights are drawn wide (std 0.2), so that different proposals get
    different classes and segmentation maps hold several classes (the default init labels every proposal alike)."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-maft-varied"), initializer_range=0.2)


@pytest.fixture(scope="session")
def tiny_mask2former_dir(tmp_path_factory):
    """A saved tiny random Mask2Former (8 queries) whose 5 classes are named "sky", "grass", "car", "thing3", "thing4",
    so that its class scores join the ensemble (Eq. 9) for the vocabularies that name them."""
    from transformers import Mask2FormerConfig

    from maft_hf.testing import build_tiny_mask2former

    path = build_tiny_mask2former(tmp_path_factory.mktemp("tiny-mask2former"), num_queries=8, num_labels=5)
    config = Mask2FormerConfig.from_pretrained(path)
    config.id2label = {0: "sky", 1: "grass", 2: "car", 3: "thing3", 4: "thing4"}
    config.label2id = {name: index for index, name in config.id2label.items()}
    config.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_sam_dir(tmp_path_factory):
    """A saved tiny random SamModel (64 px input) whose mask decoder is re-drawn wide so its masks vary."""
    from maft_hf.testing import build_tiny_sam

    return build_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))
