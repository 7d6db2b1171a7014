"""Converting a plain CLIP checkpoint directory into a MAFT checkpoint."""

import importlib
import math
import pathlib

import pytest
import torch
from test_official_conversion import fine_tune, openai_visual_from_clip
from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel

from maft_hf import MAFTProcessor, MaskAwareCLIPModel
from maft_hf.hub.conversion import preset_for
from maft_hf.testing import TINY_TEXT, TINY_VISION, build_tiny_tokenizer

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "convert_clip_checkpoint.py"


def load_script():
    return importlib.import_module("maft_hf.cli.convert_clip_checkpoint")


@pytest.fixture
def clip_dir(tmp_path):
    vision = {k: v for k, v in TINY_VISION.items() if k != "mask_start_layer"}
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=TINY_TEXT, projection_dim=16))
    clip.save_pretrained(tmp_path / "clip")
    build_tiny_tokenizer(tmp_path / "clip")
    return tmp_path / "clip", clip


def test_convert_script_writes_loadable_maft_checkpoint(clip_dir, tmp_path):
    source, clip = clip_dir
    out = tmp_path / "maft"
    load_script().main(
        [
            "--clip",
            str(source),
            "--output_dir",
            str(out),
            "--input_image_size",
            "48",
            "--mask_start_layer",
            "1",
            "--local_files_only",
        ]
    )
    model = AutoModel.from_pretrained(out)
    assert type(model) is MaskAwareCLIPModel
    assert model.config.model_type == "maft"
    assert model.config.vision_config.mask_start_layer == 1
    for name, tensor in clip.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(processor, MAFTProcessor) and processor.image_processor.size == 48
    inputs = processor(images=torch.zeros(3, 20, 30, dtype=torch.uint8), text=["a cat."])
    assert inputs["pixel_values"].shape == (1, 3, 48, 48)
    with torch.no_grad():
        assert model.get_mask_features(inputs["pixel_values"], torch.rand(1, 2, 20, 30)).pooler_output.shape == (
            1,
            2,
            16,
        )


def test_convert_rejects_a_checkpoint_without_clip_config(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    with pytest.raises((ValueError, OSError)):
        load_script().main(["--clip", str(tmp_path / "bad"), "--output_dir", str(tmp_path / "o"), "--local_files_only"])


def test_presets():
    b16 = CLIPConfig(vision_config={"patch_size": 16}).vision_config
    l14 = CLIPConfig(vision_config={"patch_size": 14, "num_hidden_layers": 24}).vision_config
    assert preset_for(b16) == {"input_image_size": 480, "mask_start_layer": 8}
    assert preset_for(l14) == {"input_image_size": 480, "mask_start_layer": 8}  # the release's forward


# ---------------------------------------------------------------------------------------------------------------
# ViT-L/14 as released: start layer 8, 480 px input of which the /14 patches read the top-left 476 px (34 x 34)
# ---------------------------------------------------------------------------------------------------------------
VIT_L_SHAPED = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=24, num_attention_heads=2, image_size=224, patch_size=14
)


def released_vit_l_forward(w, pixels, masks, heads, layers, start=8, side=480, patch=14):
    """The release's IP-CLIP forward, written from its behaviour: squeeze to 480 px, 34 x 34 patches from the
    top-left 476 px, position grid 16 -> 34 (bicubic, align_corners=True, class position kept), proposals resized
    to 34 x 34 (bilinear, align_corners=False) and visible where >= 0.5, [CLS] copied before layer 8, copies see
    themselves and their patches, patches see patches only; ln_post of the copies @ proj."""
    import torch.nn.functional as F

    grid = side // patch  # 34
    assert pixels.shape[-1] == side
    x = F.conv2d(pixels[..., : grid * patch, : grid * patch], w["conv1.weight"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    b, num_patches, d = x.shape
    pos = w["positional_embedding"]
    old = int(math.isqrt(pos.shape[0] - 1))
    pos_grid = F.interpolate(
        pos[1:].reshape(1, old, old, d).permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic", align_corners=True
    )
    pos = torch.cat([pos[:1], pos_grid.permute(0, 2, 3, 1).reshape(-1, d)])
    x = torch.cat([w["class_embedding"].expand(b, 1, d), x], 1) + pos
    x = F.layer_norm(x, (d,), w["ln_pre.weight"], w["ln_pre.bias"])
    n = masks.shape[1]
    visible = F.interpolate(masks, size=(grid, grid), mode="bilinear", align_corners=False).flatten(2) >= 0.5
    allowed = torch.zeros(b, n + num_patches, n + num_patches, dtype=torch.bool)
    allowed[:, :n, :n] = torch.eye(n, dtype=torch.bool)
    allowed[:, :n, n:] = visible
    allowed[:, n:, n:] = True
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[:, None]
    dh = d // heads
    for i in range(layers):
        if i == start:
            x = torch.cat([x[:, :1].expand(b, n, d), x[:, 1:]], 1)
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        q, k, v = (
            t.reshape(b, -1, heads, dh).transpose(1, 2)
            for t in (h @ w[p + "attn.in_proj_weight"].t() + w[p + "attn.in_proj_bias"]).split(d, -1)
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + (bias if i >= start else 0.0)
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, d)
        x = x + att @ w[p + "attn.out_proj.weight"].t() + w[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = h @ w[p + "mlp.c_fc.weight"].t() + w[p + "mlp.c_fc.bias"]
        x = x + (h * torch.sigmoid(1.702 * h)) @ w[p + "mlp.c_proj.weight"].t() + w[p + "mlp.c_proj.bias"]
    return F.layer_norm(x[:, :n], (d,), w["ln_post.weight"], w["ln_post.bias"]) @ w["proj"]


def test_released_vit_l14_conversion_equals_the_release_forward_at_480px(tmp_path):
    from maft_hf.hub.official_checkpoint import convert_official_checkpoint

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config=VIT_L_SHAPED, text_config=TINY_TEXT, projection_dim=16))
    clip.save_pretrained(tmp_path / "clip")
    build_tiny_tokenizer(tmp_path / "clip")
    weights = fine_tune(openai_visual_from_clip(clip))  # the released layout, attention and norms perturbed
    release = {f"clip_adapter.clip_model.visual.{k}": t for k, t in weights.items()}
    torch.save({"model": release}, tmp_path / "model_final.pth")

    model, _ = convert_official_checkpoint(
        tmp_path / "model_final.pth", str(tmp_path / "clip"), tmp_path / "maft", local_files_only=True
    )
    vision = model.config.vision_config
    assert (vision.mask_start_layer, vision.input_image_size) == (8, 480)
    assert AutoProcessor.from_pretrained(tmp_path / "maft").image_processor.size == 480
    pixels, masks = torch.randn(2, 3, 480, 480), torch.rand(2, 5, 480, 480)
    masks[0, 1] = 0.0  # an empty proposal sees only itself
    with torch.no_grad():
        expected = released_vit_l_forward(weights, pixels, masks, heads=2, layers=24)
        ours = model.get_mask_features(pixels, masks).pooler_output
        reloaded = AutoModel.from_pretrained(tmp_path / "maft").get_mask_features(pixels, masks).pooler_output
    assert (ours - expected).abs().max() <= 1e-4
    assert (reloaded - expected).abs().max() <= 1e-4
    # the last 4 pixel rows and columns are not read, as in the release
    shifted = pixels.clone()
    shifted[..., 476:, :] = 5.0
    shifted[..., :, 476:] = 5.0
    with torch.no_grad():
        torch.testing.assert_close(model.get_mask_features(shifted, masks).pooler_output, ours, atol=0, rtol=0)
