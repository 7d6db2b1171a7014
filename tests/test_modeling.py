"""The IP-CLIP encoder against CLIP and against a reference written straight from paper Eq. 2-4."""

import pytest
import torch
import torch.nn.functional as F
from reference_ipclip import build_mask_aware_attention_mask, full_sequence_layer, reference_mask_embeds
from transformers import AutoConfig, AutoModel, CLIPModel, CLIPVisionModel

from maft_hf import (
    MAFTConfig,
    MAFTImageProcessor,
    MAFTProcessor,
    MaskAwareCLIPModel,
    MaskAwareCLIPVisionConfig,
    MaskAwareCLIPVisionModel,
    pad_proposals,
    resize_position_embeddings,
)
from maft_hf.model.modeling_maft import validate_proposal_values
from maft_hf.testing import tiny_maft_config, tiny_vision_config


def vision_model(attn="sdpa", **overrides):
    return MaskAwareCLIPVisionModel._from_config(tiny_vision_config(**overrides), attn_implementation=attn).eval()


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_without_masks_equals_clip_vision_model(attn):
    model = vision_model(attn)
    clip = CLIPVisionModel._from_config(tiny_vision_config(), attn_implementation=attn).eval()
    clip.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    ours, theirs = model(x), clip(x)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-6, rtol=0)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("num_proposals,start", [(1, 0), (7, 2), (7, 3), (13, 1)])
def test_masks_equal_reference_from_equations(attn, num_proposals, start):
    model = vision_model(attn, mask_start_layer=start)
    x = torch.randn(2, 3, 32, 32)
    masks = torch.rand(2, num_proposals, 20, 28)  # any resolution
    masks[0, 0] = 0.0  # an empty proposal attends only to itself
    out = model(x, proposal_masks=masks)
    ref_embeds, ref_patches = reference_mask_embeds(model, x, masks)
    assert out.mask_embeds.shape == (2, num_proposals, 32)
    assert torch.isfinite(out.mask_embeds).all()
    torch.testing.assert_close(out.mask_embeds, ref_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state[:, num_proposals:], ref_patches, atol=1e-5, rtol=1e-5)


def test_reference_at_other_resolution_uses_release_position_resize():
    model = vision_model(mask_start_layer=1)
    x = torch.randn(1, 3, 48, 40)  # 6x5 grid from a 4x4 position grid
    masks = torch.rand(1, 5, 48, 40)
    ref, _ = reference_mask_embeds(model, x, masks)
    torch.testing.assert_close(model(x, proposal_masks=masks).mask_embeds, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_proposals", [1, 7, 100, 300])
def test_any_number_of_proposals(num_proposals):
    model = vision_model()
    x = torch.randn(1, 3, 32, 32)
    masks = torch.rand(1, num_proposals, 32, 32)
    out = model(x, proposal_masks=masks)
    assert out.mask_embeds.shape == (1, num_proposals, 32)
    # each proposal's embedding equals that of running it alone
    for n in {0, num_proposals // 2, num_proposals - 1}:
        alone = model(x, proposal_masks=masks[:, n : n + 1]).mask_embeds[:, 0]
        torch.testing.assert_close(out.mask_embeds[:, n], alone, atol=1e-5, rtol=1e-5)


def test_patch_tokens_do_not_depend_on_masks():
    model = vision_model()
    x = torch.randn(1, 3, 32, 32)
    a = model(x, proposal_masks=torch.rand(1, 4, 32, 32)).last_hidden_state[:, 4:]
    b = model(x, proposal_masks=torch.rand(1, 4, 32, 32)).last_hidden_state[:, 4:]
    c = model(x, proposal_masks=torch.rand(1, 9, 32, 32)).last_hidden_state[:, 9:]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)


def test_mask_embedding_ignores_other_proposals():
    model = vision_model()
    x = torch.randn(1, 3, 32, 32)
    masks = torch.rand(1, 5, 32, 32)
    changed = masks.clone()
    changed[:, 3] = 1.0 - changed[:, 3]
    a, b = model(x, proposal_masks=masks).mask_embeds, model(x, proposal_masks=changed).mask_embeds
    keep = [0, 1, 2, 4]
    torch.testing.assert_close(a[:, keep], b[:, keep], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_mask_threshold_is_greater_or_equal_after_bilinear_resize():
    model = vision_model()
    x = torch.randn(1, 3, 32, 32)
    exactly_half = torch.full((1, 1, 4, 4), 0.5)  # already at the 4x4 grid: every patch visible (>= 0.5)
    all_on = torch.ones(1, 1, 4, 4)
    torch.testing.assert_close(
        model(x, proposal_masks=exactly_half).mask_embeds, model(x, proposal_masks=all_on).mask_embeds
    )
    below = torch.full((1, 1, 4, 4), 0.4999)
    assert not torch.allclose(model(x, proposal_masks=below).mask_embeds, model(x, proposal_masks=all_on).mask_embeds)


def test_bool_masks_equal_float_masks():
    model = vision_model()
    x = torch.randn(1, 3, 32, 32)
    masks = torch.rand(1, 3, 32, 32) > 0.5
    torch.testing.assert_close(
        model(x, proposal_masks=masks).mask_embeds, model(x, proposal_masks=masks.float()).mask_embeds
    )


def test_padded_proposals_change_nothing_for_real_ones():
    model = vision_model()
    x = torch.randn(2, 3, 32, 32)
    first, second = torch.rand(3, 32, 32), torch.rand(6, 32, 32)
    masks, valid = pad_proposals([first, second])
    assert masks.shape == (2, 6, 32, 32) and valid.sum(1).tolist() == [3, 6]
    masks[0, 3:] = torch.rand(3, 32, 32)  # whatever the padding holds, it is ignored
    batched = model(x, proposal_masks=masks, proposal_valid_mask=valid).mask_embeds
    alone0 = model(x[:1], proposal_masks=first[None]).mask_embeds
    alone1 = model(x[1:], proposal_masks=second[None]).mask_embeds
    torch.testing.assert_close(batched[0, :3], alone0[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], alone1[0], atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    model = MaskAwareCLIPModel(tiny_maft_config()).train()
    x = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[0, 5, 6, 1], [0, 7, 1, 1]])
    out = model(input_ids=ids, pixel_values=x, proposal_masks=torch.rand(2, 3, 32, 32))
    image_out = model.get_image_features(x).pooler_output  # the class embedding's path without proposals
    (out.logits_per_mask.sum() + image_out.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_logits_per_mask_is_scaled_cosine():
    model = MaskAwareCLIPModel(tiny_maft_config()).eval()
    x, masks = torch.randn(1, 3, 32, 32), torch.rand(1, 4, 32, 32)
    ids = torch.tensor([[0, 5, 6, 1], [0, 7, 1, 1], [0, 9, 9, 1]])
    out = model(input_ids=ids, pixel_values=x, proposal_masks=masks)
    feats = model.get_mask_features(x, masks).pooler_output
    text = model.get_text_features(ids).pooler_output
    assert feats.shape == (1, 4, 16)
    expected = model.logit_scale.exp() * F.cosine_similarity(feats[0, :, None], text[None], dim=-1)
    assert out.logits_per_mask.shape == (1, 4, 3)
    torch.testing.assert_close(out.logits_per_mask[0], expected, atol=1e-5, rtol=1e-5)
    # without proposals the model is CLIP
    clip = CLIPModel(model.config).eval()
    clip.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        model(input_ids=ids, pixel_values=x).logits_per_image, clip(input_ids=ids, pixel_values=x).logits_per_image
    )


def test_resize_position_embeddings_matches_release_not_hf():
    pos = torch.randn(1 + 16, 8)
    ours = resize_position_embeddings(pos, (6, 6))
    torch.testing.assert_close(ours[0], pos[0])
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    # align_corners=True keeps the corner positions exactly
    torch.testing.assert_close(ours[1], pos[1])
    torch.testing.assert_close(ours[-1], pos[-1])
    hf = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(36, 8)
    assert (ours[1:] - hf).abs().max() > 1e-3


def test_hf_position_mode_matches_transformers_interpolation():
    model = vision_model(position_embedding_interpolation="hf")
    clip = CLIPVisionModel._from_config(tiny_vision_config(), attn_implementation="sdpa").eval()
    clip.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 48, 48)
    torch.testing.assert_close(
        model(x).pooler_output, clip(x, interpolate_pos_encoding=True).pooler_output, atol=1e-6, rtol=0
    )


# ---------------------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip_is_bit_exact(tmp_path):
    model = MaskAwareCLIPModel(tiny_maft_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = MaskAwareCLIPModel.from_pretrained(tmp_path).eval()
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    x, masks = torch.randn(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert torch.equal(
        model.get_mask_features(x, masks).pooler_output, loaded.get_mask_features(x, masks).pooler_output
    )
    assert loaded.config.vision_config.mask_start_layer == 2


def test_auto_classes_resolve(tmp_path):
    assert isinstance(AutoConfig.for_model("maft"), MAFTConfig)
    model = MaskAwareCLIPModel(tiny_maft_config())
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is MaskAwareCLIPModel
    assert type(AutoModel.from_config(tiny_vision_config())) is MaskAwareCLIPVisionModel
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_maft.MaskAwareCLIPModel"
    assert (tmp_path / "modeling_maft.py").exists() and (tmp_path / "configuration_maft.py").exists()


@pytest.mark.slow
def test_trust_remote_code_loads_without_the_package(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from transformers import AutoModel, AutoProcessor\n"
        f"m = AutoModel.from_pretrained({str(tiny_checkpoint)!r}, trust_remote_code=True)\n"
        f"p = AutoProcessor.from_pretrained({str(tiny_checkpoint)!r}, trust_remote_code=True)\n"
        "assert 'maft_hf' not in sys.modules, 'package was imported'\n"
        "print(type(m).__name__, type(p).__name__)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MaskAwareCLIPModel MAFTProcessor" in result.stdout


def test_plain_clip_checkpoint_loads_with_no_missing_keys(tmp_path):
    from transformers import CLIPConfig

    cfg = tiny_maft_config().to_dict()
    cfg["vision_config"].pop("mask_start_layer")
    clip = CLIPModel(CLIPConfig(vision_config=cfg["vision_config"], text_config=cfg["text_config"], projection_dim=16))
    clip.save_pretrained(tmp_path)
    model, info = MaskAwareCLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, tensor in clip.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert isinstance(model.vision_model, MaskAwareCLIPVisionModel)
    assert model.config.vision_config.mask_start_layer == 2  # 2/3 of 4 layers


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "masks,match",
    [
        (torch.rand(2, 3, 32), r"\(batch, N, H, W\).*\(2, 3, 32\)"),
        (torch.rand(3, 2, 32, 32), "batch size 3 but pixel_values has batch size 2"),
        (torch.rand(2, 0, 32, 32), "N = 0"),
        (torch.ones(2, 1, 32, 32, dtype=torch.long), "float in \\[0, 1\\] or bool"),
    ],
)
def test_bad_masks_raise_value_error(masks, match):
    model = vision_model()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(2, 3, 32, 32), proposal_masks=masks)


@pytest.mark.parametrize(
    "masks,match",
    [
        (torch.full((1, 1, 32, 32), float("nan")), "NaN"),
        (torch.full((1, 1, 32, 32), 1.5), r"\[0, 1\].*1\.5"),
        (-torch.rand(1, 1, 32, 32) - 0.1, r"\[0, 1\]"),
    ],
)
def test_mask_values_are_checked_at_the_processor_not_in_the_forward(masks, match, tiny_tokenizer):
    with pytest.raises(ValueError, match=match):
        validate_proposal_values(masks)
    processor = MAFTProcessor(MAFTImageProcessor(size=32), tiny_tokenizer)
    with pytest.raises(ValueError, match=match):
        processor(images=torch.zeros(3, 32, 32, dtype=torch.uint8), proposal_masks=masks)
    validate_proposal_values(torch.rand(1, 2, 8, 8))  # probabilities and bool pass
    validate_proposal_values(torch.rand(1, 2, 8, 8) > 0.5)
    # the forward reads no values (no host synchronisation): out-of-range masks go through, thresholded as given
    model = vision_model()
    x = torch.randn(1, 3, 32, 32)
    ones = model(x, proposal_masks=torch.ones(1, 1, 32, 32)).mask_embeds
    torch.testing.assert_close(model(x, proposal_masks=torch.full((1, 1, 32, 32), 1.5)).mask_embeds, ones)


def test_bad_config_and_images_raise_value_error():
    with pytest.raises(ValueError, match=r"mask_start_layer must be in \[0, 3\].*got 4"):
        tiny_vision_config(mask_start_layer=4)
    with pytest.raises(ValueError, match="mask_start_layer"):
        tiny_vision_config(mask_start_layer=-1)
    with pytest.raises(ValueError, match="mask_threshold"):
        tiny_vision_config(mask_threshold=0.0)
    with pytest.raises(ValueError, match="position_embedding_interpolation"):
        tiny_vision_config(position_embedding_interpolation="nearest")
    with pytest.raises(ValueError, match="smaller than the patch size 8"):
        vision_model()(torch.randn(1, 3, 6, 32), proposal_masks=torch.rand(1, 2, 6, 32))
    with pytest.raises(ValueError, match="at least patch_size"):
        tiny_vision_config(input_image_size=7)
    with pytest.raises(ValueError, match="proposal_valid_mask"):
        vision_model()(torch.randn(1, 3, 32, 32), torch.rand(1, 2, 32, 32), torch.ones(1, 3, dtype=torch.bool))


def test_default_start_layer_is_eight_for_vit_b():
    assert MaskAwareCLIPVisionConfig(num_hidden_layers=12).mask_start_layer == 8
    assert MaskAwareCLIPVisionConfig(num_hidden_layers=24).mask_start_layer == 16


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("num_proposals", [1, 6, 40])
def test_split_layer_equals_direct_full_sequence_form(attn, num_proposals):
    """The fast path (patch rows unmasked + copy rows masked) equals one masked call over the whole sequence."""
    from maft_hf.model.modeling_maft import copy_rows_mask, mask_aware_layer, to_backend_mask

    model = vision_model(attn)
    layer = model.encoder.layers[2]
    hidden = torch.randn(2, num_proposals + 16, 32)
    visibility = torch.rand(2, num_proposals, 16) > 0.5
    full = to_backend_mask(build_mask_aware_attention_mask(visibility), attn, hidden.dtype)
    assert full.shape == (2, 1, num_proposals + 16, num_proposals + 16)
    rows = to_backend_mask(copy_rows_mask(visibility), attn, hidden.dtype)
    assert rows.shape == (2, 1, num_proposals, num_proposals + 16)
    with torch.no_grad():
        direct = full_sequence_layer(layer, hidden, full)
        split = mask_aware_layer(layer, hidden, num_proposals, rows)
        copies_only = mask_aware_layer(layer, hidden, num_proposals, rows, keep_patches=False)
    torch.testing.assert_close(split, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(copies_only, direct[:, :num_proposals], atol=1e-5, rtol=1e-5)


def test_skipping_final_patch_rows_keeps_mask_embeddings():
    model = vision_model()
    x, masks = torch.randn(1, 3, 32, 32), torch.rand(1, 5, 32, 32)
    full = model(x, proposal_masks=masks)
    fast = model(x, proposal_masks=masks, return_patch_tokens=False)
    assert fast.last_hidden_state.shape == (1, 5, 32) and full.last_hidden_state.shape == (1, 5 + 16, 32)
    torch.testing.assert_close(fast.mask_embeds, full.mask_embeds, atol=1e-6, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = MaskAwareCLIPModel(tiny_maft_config()).train()
    x, masks = torch.randn(1, 3, 32, 32), torch.rand(1, 3, 32, 32)

    def grads():
        model.zero_grad()
        model.get_mask_features(x, masks).pooler_output.sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    import maft_hf.model.modeling_maft as modeling

    calls = []
    original = modeling.mask_aware_layer

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    modeling.mask_aware_layer = counted
    try:
        plain = grads()
        masked_layers = len(calls)  # layers 2 and 3 of the tiny model
        model.activation_checkpointing_enable()
        assert all(layer.gradient_checkpointing for layer in model.vision_model.encoder.layers)
        checkpointed = grads()
    finally:
        modeling.mask_aware_layer = original
    assert masked_layers == 2 and len(calls) == 3 * masked_layers  # recomputed in the backward pass
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5)


def test_output_attentions_with_masks_and_float_valid_mask_are_refused():
    model = vision_model("eager")
    with pytest.raises(ValueError, match="output_attentions is not supported with proposal_masks"):
        model(torch.randn(1, 3, 32, 32), torch.rand(1, 2, 32, 32), output_attentions=True)
    with pytest.raises(ValueError, match="proposal_valid_mask must be bool"):
        model(torch.randn(1, 3, 32, 32), torch.rand(1, 2, 32, 32), torch.ones(1, 2))


def test_labels_give_the_mask_aware_loss():
    from maft_hf import maft_loss

    model = MaskAwareCLIPModel(tiny_maft_config()).train()
    x, masks = torch.randn(2, 3, 32, 32), torch.rand(2, 4, 32, 32)
    valid = torch.tensor([[True, True, True, False], [True] * 4])
    ids = torch.tensor([[0, 5, 6, 1], [0, 7, 1, 1], [0, 9, 9, 1]])
    labels = torch.randint(0, 3, (2, 16, 16))
    labels[0, :4] = 255
    out = model(input_ids=ids, pixel_values=x, proposal_masks=masks, proposal_valid_mask=valid, labels=labels)
    expected = maft_loss(out.logits_per_mask, masks, labels, proposal_valid_mask=valid).loss
    assert out.loss.ndim == 0 and out["loss"] is out.loss and out.to_tuple()[0] is out.loss  # Trainer reads either
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.vision_model.encoder.layers[-1].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert model(input_ids=ids, pixel_values=x, proposal_masks=masks).loss is None
    with pytest.raises(ValueError, match="labels need proposal_masks"):
        model(input_ids=ids, pixel_values=x, labels=labels)
