"""Tiny random MAFT models, tokenizers and checkpoints that build offline in milliseconds, for the test suite, the
offline demo and the documentation tests; never for real results."""

from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path

from .model.configuration_maft import MAFTConfig, MaskAwareCLIPVisionConfig

_TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4)
TINY_VISION = dict(**_TINY, num_hidden_layers=4, image_size=32, patch_size=8, mask_start_layer=2)
_TOKEN_IDS = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)  # those of build_tiny_tokenizer
TINY_TEXT = dict(**_TINY, num_hidden_layers=2, vocab_size=99, max_position_embeddings=32, **_TOKEN_IDS)


def tiny_vision_config(**overrides) -> MaskAwareCLIPVisionConfig:
    """A 4-layer, 32-wide mask-aware vision config on 32x32 images with 8x8 patches (mask_start_layer 2)."""
    return MaskAwareCLIPVisionConfig(**{**TINY_VISION, **overrides})


def tiny_maft_config(vision: dict | None = None, text: dict | None = None, **overrides) -> MAFTConfig:
    """A tiny `MAFTConfig` (projection 16) whose text tower matches [`build_tiny_tokenizer`]."""
    return MAFTConfig(
        vision_config={**TINY_VISION, **(vision or {})},
        text_config={**TINY_TEXT, **(text or {})},
        **{"projection_dim": 16, **overrides},
    )


def build_tiny_tokenizer(directory: str | os.PathLike | None = None):
    """A character-level CLIP tokenizer (62 tokens, bos 0, eos/pad 1), saved to `directory` when given."""
    from transformers import CLIPTokenizer

    work = Path(directory if directory is not None else tempfile.mkdtemp(prefix="maft_tiny_tokenizer_"))
    work.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + [
        t for c in string.ascii_lowercase + ".,-'" for t in (c, c + "</w>")
    ]
    (work / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (work / "merges.txt").write_text("#version: 0.2\n")
    max_length = TINY_TEXT["max_position_embeddings"]
    tokenizer = CLIPTokenizer(str(work / "vocab.json"), str(work / "merges.txt"), model_max_length=max_length)
    if directory is not None:
        tokenizer.save_pretrained(work)
    return tokenizer


def build_tiny_checkpoint(directory: str | os.PathLike, seed: int = 0, input_image_size: int = 32, **vision):
    """Save a tiny random `MaskAwareCLIPModel` with its `MAFTProcessor` to `directory`; returns the directory."""
    import torch

    from .model.modeling_maft import MaskAwareCLIPModel
    from .model.processing_maft import MAFTImageProcessor, MAFTProcessor

    torch.manual_seed(seed)
    model = MaskAwareCLIPModel(tiny_maft_config(vision={"input_image_size": input_image_size, **vision}))
    model.save_pretrained(directory)
    MAFTProcessor(MAFTImageProcessor(size=input_image_size), build_tiny_tokenizer()).save_pretrained(directory)
    return os.fspath(directory)


def build_tiny_mask2former(
    directory: str | os.PathLike, num_queries: int = 10, num_labels: int = 5, seed: int = 0, image_size: int = 64
):
    """Save a tiny random `Mask2FormerForUniversalSegmentation` (Swin backbone, 16 wide) and its image processor
    (short side `image_size`) to `directory`; returns the directory. Loads with `"mask2former:<directory>"`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    stages = ["stage1", "stage2", "stage3", "stage4"]
    backbone = transformers.SwinConfig(
        embed_dim=16, depths=[1] * 4, num_heads=[1] * 4, image_size=image_size, window_size=4, out_features=stages
    )
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, hidden_dim=32, feature_size=32, mask_feature_size=32, num_queries=num_queries,
        decoder_layers=3, encoder_layers=1, encoder_feedforward_dim=64, dim_feedforward=64, num_attention_heads=2,
        num_labels=num_labels, id2label={i: f"thing{i}" for i in range(num_labels)},
    )  # fmt: skip
    transformers.Mask2FormerForUniversalSegmentation(config).save_pretrained(directory)
    size = {"shortest_edge": image_size, "longest_edge": 2 * image_size}
    transformers.Mask2FormerImageProcessor(size=size).save_pretrained(directory)
    return os.fspath(directory)


def build_tiny_sam(directory: str | os.PathLike | None = None, seed: int = 0):
    """A tiny random `SamModel` (64 px input, 8 px patches) whose mask decoder is re-drawn wide, since the default
    init gives mask logits of about 0 and no threshold or NMS would then matter. Saved to `directory` when given
    (loads with `"sam:<directory>"`); returns the model, or the directory when one is given."""
    import torch
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(
            hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2, image_size=64,
            patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=8, mlp_dim=64,  # output_channels/2
            initializer_range=0.02,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=16
        ),
    )  # fmt: skip
    model = SamModel(config).eval()
    with torch.no_grad():
        for parameter in model.mask_decoder.parameters():
            if parameter.ndim > 1:
                parameter.normal_(0.0, 2.0 / parameter.shape[-1] ** 0.5)
    if directory is None:
        return model
    model.save_pretrained(directory)
    return os.fspath(directory)
