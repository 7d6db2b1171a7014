"""Freeze policies: trainable counts derived from the config by hand, and an AdamW step moves only trained weights."""

import pytest
import torch
from conftest import TINY_VISION, tiny_maft_config, tiny_vision_config

from maft_hf import MaskAwareCLIPModel, MaskAwareCLIPVisionModel
from maft_hf.training.freezing import FREEZE_POLICIES, apply_freeze_policy, is_trainable, parameter_groups
from maft_hf.training.losses import maft_loss

H = TINY_VISION["hidden_size"]
I = TINY_VISION["intermediate_size"]  # noqa: E741  (the paper's symbol)
L = TINY_VISION["num_hidden_layers"]
P = TINY_VISION["patch_size"]
POSITIONS = (TINY_VISION["image_size"] // P) ** 2 + 1
PROJ = 16  # projection_dim of tiny_maft_config

ATTENTION = 4 * (H * H + H)  # q, k, v, out projections with biases
NORM = 2 * H  # weight + bias
MLP = (H * I + I) + (I * H + H)
EMBEDDINGS = H + 3 * P * P * H + POSITIONS * H  # class embedding, patch conv (no bias), positions

EXPECTED_TRAINABLE = {
    "released": L * (ATTENTION + 2 * NORM) + NORM,
    "paper": L * (ATTENTION + 2 * NORM) + NORM + NORM + PROJ * H,
    "all": EMBEDDINGS + NORM + L * (ATTENTION + 2 * NORM + MLP) + NORM + PROJ * H,
}


@pytest.fixture
def model():
    return MaskAwareCLIPModel(tiny_maft_config()).eval()


def test_policies_are_the_documented_three():
    assert set(FREEZE_POLICIES) == {"released", "paper", "all"}


@pytest.mark.parametrize("policy", ["released", "paper", "all"])
def test_trainable_counts(model, policy):
    total = sum(p.numel() for p in model.parameters())
    summary = apply_freeze_policy(model, policy)
    assert summary["trainable"] == EXPECTED_TRAINABLE[policy]
    assert summary["frozen"] == total - EXPECTED_TRAINABLE[policy]
    assert summary["trainable_names"] == [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(not n.startswith("text_model") for n in summary["trainable_names"])
    assert not {"logit_scale", "text_projection.weight"} & set(summary["trainable_names"])


def test_released_policy_names(model):
    names = apply_freeze_policy(model, "released")["trainable_names"]
    for frozen in ("mlp", "embeddings", "pre_layrnorm", "visual_projection"):
        assert not any(frozen in n for n in names), frozen
    assert "vision_model.post_layernorm.weight" in names
    assert "vision_model.encoder.layers.3.self_attn.out_proj.bias" in names
    assert "vision_model.encoder.layers.0.layer_norm2.weight" in names
    paper = apply_freeze_policy(model, "paper")["trainable_names"]
    assert set(paper) - set(names) == {
        "vision_model.pre_layrnorm.weight",
        "vision_model.pre_layrnorm.bias",
        "visual_projection.weight",
    }
    assert is_trainable("vision_model.encoder.layers.11.self_attn.q_proj.weight")
    assert not is_trainable("text_model.encoder.layers.0.self_attn.q_proj.weight")
    assert not is_trainable("vision_model.encoder.layers.0.mlp.fc1.weight", "paper")
    assert is_trainable("vision_model.encoder.layers.0.mlp.fc1.weight", "all")


def test_vision_model_alone():
    vision = MaskAwareCLIPVisionModel(tiny_vision_config())
    assert apply_freeze_policy(vision, "released")["trainable"] == EXPECTED_TRAINABLE["released"]
    assert apply_freeze_policy(vision, "all")["trainable"] == EXPECTED_TRAINABLE["all"] - PROJ * H


def test_errors(model):
    with pytest.raises(ValueError, match="released"):
        apply_freeze_policy(model, "bogus")
    with pytest.raises(ValueError, match="matched no parameter"):
        apply_freeze_policy(torch.nn.Linear(2, 2))
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        parameter_groups(model)


def test_parameter_groups_no_decay_on_norms(model):
    apply_freeze_policy(model, "released")
    groups = parameter_groups(model, weight_decay=1e-4)
    by_id = {id(p): n for n, p in model.named_parameters()}
    decay = {by_id[id(p)] for p in groups[0]["params"]}
    no_decay = {by_id[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0.0
    vision = [n for n in by_id.values() if n.startswith("vision_model")]
    assert no_decay == {n for n in vision if "layer_norm" in n or "post_layernorm" in n}
    assert decay == {n for n in vision if "self_attn" in n}
    assert "vision_model.encoder.layers.0.self_attn.q_proj.bias" in decay  # biases keep their decay


@pytest.mark.parametrize("policy", ["released", "paper"])
def test_adamw_step_moves_only_trainable(model, policy):
    summary = apply_freeze_policy(model, policy)
    trainable = set(summary["trainable_names"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-3)

    pixel_values = torch.randn(2, 3, 32, 32)
    proposals = torch.rand(2, 5, 32, 32)
    labels = torch.randint(0, 3, (2, 32, 32))
    input_ids = torch.tensor([[0, 5, 6, 1], [0, 7, 8, 1], [0, 9, 10, 1]])
    logits = model(input_ids=input_ids, pixel_values=pixel_values, proposal_masks=proposals).logits_per_mask
    text = torch.nn.functional.normalize(model.get_text_features(input_ids=input_ids).pooler_output, dim=-1)
    image = torch.nn.functional.normalize(model.get_image_features(pixel_values).pooler_output, dim=-1)
    student = 100 * image @ text.t()
    out = maft_loss(logits, proposals, labels, student, torch.randn(2, 3))
    out.loss.backward()
    optimizer.step()

    for name, param in model.named_parameters():
        moved = not torch.equal(param.detach(), before[name])
        if name in trainable:
            assert moved, f"trainable {name} did not move"
        else:
            assert not moved and param.grad is None, f"frozen {name} moved or got a gradient"
