"""Without proposals the MAFT classes are CLIP: what transformers' CLIP model tests check, against `CLIPVisionModel`,
`CLIPVisionModelWithProjection` and `CLIPModel` holding the same weights; with proposals, where it applies."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from maft_hf import (
    MaskAwareCLIPModel,
    MaskAwareCLIPVisionModel,
    MaskAwareCLIPVisionModelWithProjection,
)
from maft_hf.testing import TINY_TEXT, TINY_VISION, tiny_maft_config, tiny_vision_config

CLIP_VISION = {k: v for k, v in TINY_VISION.items() if k != "mask_start_layer"}
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
MASKS = torch.rand(2, 5, 32, 32, generator=torch.Generator().manual_seed(1))
IDS = torch.tensor([[0, 5, 6, 1], [0, 7, 1, 1], [0, 9, 9, 1]])


def pair(kind, attn="eager"):
    """(ours, CLIP's) of one kind, same weights, eval mode."""
    if kind == "vision":
        ours = MaskAwareCLIPVisionModel._from_config(tiny_vision_config(), attn_implementation=attn)
        theirs = CLIPVisionModel._from_config(CLIPVisionConfig(**CLIP_VISION), attn_implementation=attn)
    elif kind == "projection":
        ours = MaskAwareCLIPVisionModelWithProjection._from_config(
            tiny_vision_config(projection_dim=16), attn_implementation=attn
        )
        theirs = CLIPVisionModelWithProjection._from_config(
            CLIPVisionConfig(**CLIP_VISION, projection_dim=16), attn_implementation=attn
        )
    else:
        ours = MaskAwareCLIPModel._from_config(tiny_maft_config(), attn_implementation=attn)
        config = CLIPConfig(vision_config=CLIP_VISION, text_config=TINY_TEXT, projection_dim=16)
        theirs = CLIPModel._from_config(config, attn_implementation=attn)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def inputs(kind):
    return {"pixel_values": PIXELS} if kind != "clip" else {"pixel_values": PIXELS, "input_ids": IDS}


def flat(output):
    """Every tensor of a (nested) model output, in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    values = output.to_tuple() if hasattr(output, "to_tuple") else output
    return [t for v in values for t in flat(v)]


def assert_same(a, b, atol=1e-6):
    a, b = flat(a), flat(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vision", "projection", "clip"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_outputs_hidden_states_and_attentions_equal_clip(kind, attn):
    ours, theirs = pair(kind, attn)
    options = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        a, b = ours(**inputs(kind), **options), theirs(**inputs(kind), **options)
    assert a.keys() == b.keys()
    assert_same(a, b)
    vision_a = a.vision_model_output if kind == "clip" else a
    assert len(vision_a.hidden_states) == TINY_VISION["num_hidden_layers"] + 1
    if attn == "eager":  # CLIP's attention weights, (batch, heads, 1 + P, 1 + P), rows summing to 1
        assert len(vision_a.attentions) == TINY_VISION["num_hidden_layers"]
        assert vision_a.attentions[0].shape == (2, 4, 17, 17)
        torch.testing.assert_close(vision_a.attentions[-1].sum(-1), torch.ones(2, 4, 17))
    else:  # SDPA returns no weights, in CLIP as here
        assert vision_a.attentions == ()


@pytest.mark.parametrize("kind", ["vision", "projection", "clip"])
def test_tuple_outputs_equal_dict_outputs(kind):
    ours, theirs = pair(kind)
    with torch.no_grad():
        for extra in ({}, {"proposal_masks": MASKS}):
            as_dict = ours(**inputs(kind), **extra, output_hidden_states=True)
            as_tuple = ours(**inputs(kind), **extra, output_hidden_states=True, return_dict=False)
            assert isinstance(as_tuple, tuple)
            assert_same(as_tuple, as_dict)
        assert_same(ours(**inputs(kind), return_dict=False), theirs(**inputs(kind), return_dict=False))


@pytest.mark.parametrize("kind", ["vision", "projection", "clip"])
def test_save_and_load_keep_outputs_and_load_into_clip(kind, tmp_path):
    ours, theirs = pair(kind)
    ours.save_pretrained(tmp_path / "ours")
    loaded = type(ours).from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    clip_loaded, info = type(theirs).from_pretrained(
        tmp_path / "ours", output_loading_info=True, attn_implementation="eager"
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    extra = {"proposal_masks": MASKS}
    with torch.no_grad():
        assert_same(loaded(**inputs(kind)), ours(**inputs(kind)), atol=0)
        assert_same(loaded(**inputs(kind), **extra), ours(**inputs(kind), **extra), atol=0)
        assert_same(clip_loaded.eval()(**inputs(kind)), theirs(**inputs(kind)))


@pytest.mark.parametrize("kind", ["vision", "projection", "clip"])
def test_gradient_checkpointing_gives_clips_gradients(kind):
    ours, theirs = pair(kind)
    grads = {}
    for name, model in (("ours", ours), ("clip", theirs)):
        model.train()
        model.activation_checkpointing_enable()
        assert all(layer.gradient_checkpointing for layer in model.base_model.modules() if hasattr(layer, "mlp"))
        out = model(**inputs(kind))
        first = out[0] if kind != "clip" else out.logits_per_image
        first.float().pow(2).sum().backward()
        grads[name] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads["ours"].keys() == grads["clip"].keys() and grads["ours"]
    for n in grads["ours"]:
        torch.testing.assert_close(grads["ours"][n], grads["clip"][n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["vision", "projection", "clip"])
def test_eager_equals_sdpa_with_and_without_masks(kind):
    eager, _ = pair(kind, "eager")
    sdpa, _ = pair(kind, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    with torch.no_grad():
        assert_same(eager(**inputs(kind)), sdpa(**inputs(kind)), atol=1e-5)
        assert_same(eager(**inputs(kind), proposal_masks=MASKS), sdpa(**inputs(kind), proposal_masks=MASKS), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_half_precision_on_cpu(dtype, attn):
    ours, theirs = pair("vision", attn)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = PIXELS.to(dtype)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).pooler_output, theirs(x).pooler_output, atol=0, rtol=0)
        half = ours(x, proposal_masks=MASKS).mask_embeds
        full = ours.float()(PIXELS, proposal_masks=MASKS).mask_embeds
    assert half.dtype == dtype
    torch.testing.assert_close(half.float(), full, atol=0.1, rtol=0.05)


def test_projection_model_mask_embeds_are_the_projected_mask_embeddings():
    ours, _ = pair("projection")
    with torch.no_grad():
        out = ours(PIXELS, proposal_masks=MASKS)
        vision = ours.vision_model(PIXELS, proposal_masks=MASKS)
    assert out.image_embeds is None and out.mask_embeds.shape == (2, 5, 16)
    torch.testing.assert_close(out.mask_embeds, vision.mask_embeds @ ours.visual_projection.weight.t())


def test_clip_contrastive_loss_without_masks():
    ours, theirs = pair("clip")
    with torch.no_grad():
        a = ours(pixel_values=PIXELS, input_ids=IDS[:2], return_loss=True).loss
        b = theirs(pixel_values=PIXELS, input_ids=IDS[:2], return_loss=True).loss
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("attn", ["flex_attention", "flash_attention_2", "paged|eager"])
@pytest.mark.parametrize("cls", [MaskAwareCLIPVisionModel, MaskAwareCLIPVisionModelWithProjection, MaskAwareCLIPModel])
def test_unsupported_attention_is_refused_at_load(cls, attn, tmp_path):
    def config():
        return tiny_maft_config() if cls is MaskAwareCLIPModel else tiny_vision_config()

    with pytest.raises(ValueError, match="supports attn_implementation in \\('eager', 'sdpa'\\)"):
        cls._from_config(config(), attn_implementation=attn)
    cls(config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="mask of the proposal rows"):
        cls.from_pretrained(tmp_path, attn_implementation=attn)
    model = cls.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="supports attn_implementation"):
        model.set_attn_implementation(attn)


def test_output_attentions_with_masks_is_refused():
    ours, _ = pair("vision")
    with pytest.raises(ValueError, match="output_attentions is not supported with proposal_masks"):
        ours(PIXELS, proposal_masks=MASKS, output_attentions=True)
