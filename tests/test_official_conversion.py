"""Converting a checkpoint of the authors' release (OpenAI CLIP names under a nested prefix) into a MAFT checkpoint."""

import argparse
import importlib
import logging
import math
import pathlib
import pickle
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel, CLIPConfig, CLIPModel

from maft_hf import MaskAwareCLIPModel
from maft_hf.hub.official_checkpoint import convert_official_checkpoint, find_visual_prefixes, load_source_checkpoint
from maft_hf.testing import TINY_TEXT, TINY_VISION, build_tiny_tokenizer

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "convert_official_checkpoint.py"
PREFIX = "clip_adapter.clip_model."  # a CLIP beside the segmenter, inside {"model": ...}
LAYERS, HEADS = TINY_VISION["num_hidden_layers"], TINY_VISION["num_attention_heads"]


def convert(path, clip_dir, out, **kwargs):
    return convert_official_checkpoint(path, str(clip_dir), out, local_files_only=True, **kwargs)


def load_script():
    return importlib.import_module("maft_hf.cli.convert_official_checkpoint")


# ---------------------------------------------------------------------------------------------------------------
# A fake release: OpenAI-named tensors written here from the transformers base, then "fine-tuned"
# ---------------------------------------------------------------------------------------------------------------
def openai_visual_from_clip(clip: CLIPModel) -> dict:
    sd = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    v = "vision_model."
    out = {
        "conv1.weight": sd[v + "embeddings.patch_embedding.weight"],
        "class_embedding": sd[v + "embeddings.class_embedding"],
        "positional_embedding": sd[v + "embeddings.position_embedding.weight"],
        "ln_pre.weight": sd[v + "pre_layrnorm.weight"],
        "ln_pre.bias": sd[v + "pre_layrnorm.bias"],
        "ln_post.weight": sd[v + "post_layernorm.weight"],
        "ln_post.bias": sd[v + "post_layernorm.bias"],
        "proj": sd["visual_projection.weight"].t().contiguous(),  # OpenAI keeps (D, P)
    }
    for i in range(clip.config.vision_config.num_hidden_layers):
        hf, oa = f"{v}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[oa + f"attn.in_proj_{kind}"] = torch.cat([sd[hf + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[oa + f"attn.out_proj.{kind}"] = sd[hf + f"self_attn.out_proj.{kind}"]
            out[oa + f"ln_1.{kind}"] = sd[hf + f"layer_norm1.{kind}"]
            out[oa + f"ln_2.{kind}"] = sd[hf + f"layer_norm2.{kind}"]
            out[oa + f"mlp.c_fc.{kind}"] = sd[hf + f"mlp.fc1.{kind}"]
            out[oa + f"mlp.c_proj.{kind}"] = sd[hf + f"mlp.fc2.{kind}"]
    return out


def openai_text_from_clip(clip: CLIPModel) -> dict:
    sd = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    t = "text_model."
    out = {
        "token_embedding.weight": sd[t + "embeddings.token_embedding.weight"],
        "positional_embedding": sd[t + "embeddings.position_embedding.weight"],
        "ln_final.weight": sd[t + "final_layer_norm.weight"],
        "ln_final.bias": sd[t + "final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t().contiguous(),
        "logit_scale": sd["logit_scale"],
    }
    for i in range(TINY_TEXT["num_hidden_layers"]):
        hf, oa = f"{t}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        out[oa + "attn.in_proj_weight"] = torch.cat([sd[hf + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        out[oa + "ln_1.weight"] = sd[hf + "layer_norm1.weight"]
    return out


def fine_tune(visual: dict, seed: int = 1) -> dict:
    """Perturb what MAFT trains (attention, layer norms of the blocks, post layer norm); keep the rest."""
    g = torch.Generator().manual_seed(seed)
    trained = ("attn.", "ln_1.", "ln_2.", "ln_post.")
    return {
        k: v + 0.05 * torch.randn(v.shape, generator=g) if any(t in k for t in trained) else v.clone()
        for k, v in visual.items()
    }


@pytest.fixture
def clip_dir(tmp_path):
    vision = {k: v for k, v in TINY_VISION.items() if k != "mask_start_layer"}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=TINY_TEXT, projection_dim=16))
    clip.save_pretrained(tmp_path / "clip")
    build_tiny_tokenizer(tmp_path / "clip")
    return tmp_path / "clip", clip


def save_release(path, visual: dict, text: dict | None = None, extra: dict | None = None):
    model = {PREFIX + "visual." + k: v for k, v in visual.items()}
    model.update({PREFIX + k: v for k, v in (text or {}).items()})
    model["sem_seg_head.predictor.mask_embed.layers.0.weight"] = torch.randn(8, 8)  # the proposal generator
    model.update(extra or {})
    torch.save({"model": model, "iteration": 999, "scheduler": {"last_epoch": 999}}, path)
    return path


@pytest.fixture
def release(clip_dir, tmp_path):
    _, clip = clip_dir
    visual = fine_tune(openai_visual_from_clip(clip))
    return save_release(tmp_path / "model_final.pth", visual, openai_text_from_clip(clip)), visual


# ---------------------------------------------------------------------------------------------------------------
# Reference: OpenAI CLIP ViT written from the OpenAI layout, explicit attention
# ---------------------------------------------------------------------------------------------------------------
def layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def reference_openai_vit(w: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, 3, S, S) -> (B, P): conv1; cat class; + pos; ln_pre; resblocks (packed in_proj); ln_post(x[:, 0]) @ proj."""
    patch = w["conv1.weight"].shape[-1]
    x = torch.nn.functional.conv2d(pixels, w["conv1.weight"], stride=patch)  # (B, D, g, g)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, g*g, D)
    x = torch.cat([w["class_embedding"].reshape(1, 1, -1).expand(x.shape[0], 1, -1), x], dim=1)
    x = x + w["positional_embedding"]
    x = layer_norm(x, w["ln_pre.weight"], w["ln_pre.bias"])
    b, n, d = x.shape
    dh = d // heads
    for i in range(LAYERS):
        p = f"transformer.resblocks.{i}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.in_proj_weight"].t() + w[p + "attn.in_proj_bias"]
        q, k, v = (t.reshape(b, n, heads, dh).transpose(1, 2) for t in qkv.split(d, dim=-1))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1) @ v
        att = att.transpose(1, 2).reshape(b, n, d)
        x = x + att @ w[p + "attn.out_proj.weight"].t() + w[p + "attn.out_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = h @ w[p + "mlp.c_fc.weight"].t() + w[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + h @ w[p + "mlp.c_proj.weight"].t() + w[p + "mlp.c_proj.bias"]
    return layer_norm(x[:, 0], w["ln_post.weight"], w["ln_post.bias"]) @ w["proj"]


# ---------------------------------------------------------------------------------------------------------------
def test_converted_model_equals_the_openai_reference(clip_dir, release, tmp_path):
    source, _ = clip_dir
    path, visual = release
    model, report = convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = reference_openai_vit(visual, pixels, HEADS)
        ours = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert report.verify_max_abs_diff is not None and report.verify_max_abs_diff < 1e-5
    # The reloaded directory gives the same numbers.
    reloaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        again = reloaded.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)


def test_every_encoder_tensor_is_used_exactly_once(clip_dir, release, tmp_path):
    source, clip = clip_dir
    path, visual = release
    model, report = convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    assert report.prefix == "model." + PREFIX + "visual."
    assert report.used == sorted(visual) and report.unused == []
    assert len(report.used) == 8 + 12 * LAYERS
    flat = load_source_checkpoint(path)
    assert report.outside_encoder == len(flat) - len(visual)
    sd = model.state_dict()
    # Explicit layout checks: in_proj split into q, k, v in that order; proj transposed.
    for i in range(LAYERS):
        src, dst = f"transformer.resblocks.{i}.attn.", f"vision_model.encoder.layers.{i}.self_attn."
        w, bias = visual[src + "in_proj_weight"], visual[src + "in_proj_bias"]
        for j, name in enumerate("qkv"):
            assert torch.equal(sd[f"{dst}{name}_proj.weight"], w[32 * j : 32 * (j + 1)])
            assert torch.equal(sd[f"{dst}{name}_proj.bias"], bias[32 * j : 32 * (j + 1)])
    assert torch.equal(sd["visual_projection.weight"], visual["proj"].t())
    assert sd["vision_model.embeddings.position_embedding.weight"].shape == (1 + 4 * 4, 32)
    # Trained tensors changed, frozen ones did not, the text tower is the base's.
    trained = ("self_attn", "layer_norm1", "layer_norm2", "post_layernorm")
    assert report.changed_from_base and all(any(t in k for t in trained) for k in report.changed_from_base)
    assert report.frozen_changed == []
    assert report.text_tower_max_abs_diff == 0.0
    for name, tensor in clip.state_dict().items():
        if name.startswith("text_model.") or name in ("text_projection.weight", "logit_scale"):
            assert torch.equal(sd[name], tensor), name
    assert model.config.model_type == "maft" and model.config.vision_config.mask_start_layer == 2


def test_half_precision_release_and_unnested_state_dict(clip_dir, tmp_path):
    source, clip = clip_dir
    visual = {k: v.half() for k, v in fine_tune(openai_visual_from_clip(clip)).items()}
    torch.save({"visual." + k: v for k, v in visual.items()}, tmp_path / "flat.pth")  # no "model" container
    model, report = convert(tmp_path / "flat.pth", source, tmp_path / "out")
    assert report.prefix == "visual." and report.source_dtypes == ["float16"]
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference_openai_vit({k: v.float() for k, v in visual.items()}, pixels, HEADS)
        ours = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_frozen_teacher_copy_is_skipped_and_ambiguity_needs_a_prefix(clip_dir, tmp_path):
    source, clip = clip_dir
    base = openai_visual_from_clip(clip)
    tuned = fine_tune(base)
    teacher = {"clip_teacher.visual." + k: v for k, v in base.items()}  # a frozen copy equal to the base
    path = save_release(tmp_path / "r.pth", tuned, extra=teacher)
    found = find_visual_prefixes(load_source_checkpoint(path))
    assert found == ["model." + PREFIX + "visual.", "model.clip_teacher.visual."]
    _, report = convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    assert report.prefix == "model." + PREFIX + "visual."

    other = {"second.visual." + k: v for k, v in fine_tune(base, seed=2).items()}
    path = save_release(tmp_path / "r2.pth", tuned, extra=other)
    with pytest.raises(ValueError, match=r"several CLIP image encoders.*pass prefix"):
        convert_official_checkpoint(path, str(source), tmp_path / "out2", local_files_only=True)
    model, report = convert_official_checkpoint(
        path, str(source), tmp_path / "out2", prefix="model.second.visual", local_files_only=True
    )
    assert report.prefix == "model.second.visual."
    assert torch.equal(model.state_dict()["visual_projection.weight"], other["second.visual.proj"].t())


def test_released_layout_takes_the_fine_tuned_ipclip_encoder(clip_dir, tmp_path):
    """The release: fine-tuned `model.IPCLIP.`, frozen copies at `model.T.` (teacher) and the segmenter's CLIP."""
    source, clip = clip_dir
    base, tuned = openai_visual_from_clip(clip), fine_tune(openai_visual_from_clip(clip))
    extra = {"IPCLIP." + k: v for k, v in tuned.items()} | {"T." + k: v.clone() for k, v in base.items()}
    path = save_release(tmp_path / "release.pth", base, openai_text_from_clip(clip), extra=extra)
    model, report = convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    assert report.prefix == "model.IPCLIP." and len(report.candidates) == 3
    assert torch.equal(model.state_dict()["visual_projection.weight"], tuned["proj"].t())
    assert report.text_tower_max_abs_diff == 0.0 and report.frozen_changed == []


def test_checkpoint_without_clip_image_encoder_is_refused(clip_dir, tmp_path):
    source, _ = clip_dir
    torch.save({"model": {"backbone.res2.0.conv1.weight": torch.randn(4, 4, 1, 1)}}, tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="no CLIP image encoder in OpenAI naming"):
        convert_official_checkpoint(tmp_path / "r50.pth", str(source), tmp_path / "out", local_files_only=True)
    with pytest.raises(ValueError, match="No CLIP image encoder under prefix 'foo.'"):
        convert(tmp_path / "r50.pth", source, tmp_path / "out", prefix="foo")
    assert not (tmp_path / "out").exists()


def test_shapes_that_do_not_match_the_clip_config_are_refused(clip_dir, tmp_path):
    source, clip = clip_dir
    visual = fine_tune(openai_visual_from_clip(clip))
    bad = dict(visual, positional_embedding=torch.randn(1 + 5 * 5, 32))  # a 40 px grid, config says 32 px
    bad["transformer.resblocks.1.mlp.c_fc.weight"] = torch.randn(48, 32)
    path = save_release(tmp_path / "bad.pth", bad)
    with pytest.raises(
        ValueError,
        match=r"positional_embedding: expected \(17, 32\), found \(26, 32\).*"
        r"resblocks\.1\.mlp\.c_fc\.weight: expected \(64, 32\), found \(48, 32\)",
    ) as excinfo:
        convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    assert "5x5 grid (40 px), the config's for 32 px" in str(excinfo.value)

    missing = {k: v for k, v in visual.items() if not k.startswith("transformer.resblocks.3.")}
    path = save_release(tmp_path / "short.pth", missing)
    with pytest.raises(ValueError, match=r"3 transformer\.resblocks, the CLIP config 4.*missing tensors: transformer"):
        convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)

    wider = dict(visual, proj=torch.randn(32, 24))
    path = save_release(tmp_path / "proj.pth", wider)
    with pytest.raises(ValueError, match=r"proj: expected \(32, 16\), found \(32, 24\)"):
        convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    assert not (tmp_path / "out").exists()


def test_unused_tensors_are_refused_unless_allowed(clip_dir, tmp_path):
    source, clip = clip_dir
    visual = dict(fine_tune(openai_visual_from_clip(clip)), **{"attnpool.extra": torch.randn(3)})
    path = save_release(tmp_path / "extra.pth", visual)
    with pytest.raises(ValueError, match=r"does not use.*attnpool\.extra"):
        convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    _, report = convert(path, source, tmp_path / "out", allow_unused=True)
    assert report.unused == ["attnpool.extra"] and "attnpool.extra" not in report.used


def test_pickles_load_safely_and_unsafe_needs_a_flag(clip_dir, tmp_path):
    source, clip = clip_dir
    visual = fine_tune(openai_visual_from_clip(clip))
    model = {PREFIX + "visual." + k: v for k, v in visual.items()}
    torch.save({"model": model, "cfg": argparse.Namespace(lr=1e-5)}, tmp_path / "args.pth")
    with pytest.raises(ValueError, match=r"weights_only=True.*unsafe_pickle"):
        convert_official_checkpoint(tmp_path / "args.pth", str(source), tmp_path / "out", local_files_only=True)
    with pytest.warns(UserWarning, match="arbitrary code"):
        _, report = convert_official_checkpoint(
            tmp_path / "args.pth", str(source), tmp_path / "out", unsafe_pickle=True, local_files_only=True
        )
    assert report.used == sorted(visual)


def test_numpy_releases_load_safely(clip_dir, tmp_path):
    source, clip = clip_dir
    visual = fine_tune(openai_visual_from_clip(clip))
    arrays = {"model": {PREFIX + "visual." + k: v.numpy() for k, v in visual.items()}, "__author__": "someone"}
    torch.save(arrays, tmp_path / "arrays.pth")  # torch.save of NumPy arrays
    with open(tmp_path / "arrays.pkl", "wb") as f:  # a detectron2 model-zoo style plain pickle
        pickle.dump(arrays, f, protocol=4)
    for name in ("arrays.pth", "arrays.pkl"):
        flat = load_source_checkpoint(tmp_path / name)
        assert all(torch.equal(flat["model." + PREFIX + "visual." + k], v) for k, v in visual.items())
        _, report = convert(tmp_path / name, source, tmp_path / name.replace(".", "_"))
        assert report.used == sorted(visual) and report.verify_max_abs_diff < 1e-5

    with open(tmp_path / "args.pkl", "wb") as f:
        pickle.dump(dict(arrays, args=argparse.Namespace(lr=1e-5)), f, protocol=4)
    with pytest.raises(ValueError, match=r"argparse\.Namespace.*unsafe_pickle"):
        load_source_checkpoint(tmp_path / "args.pkl")
    with pytest.warns(UserWarning, match="arbitrary code"):
        assert len(load_source_checkpoint(tmp_path / "args.pkl", unsafe_pickle=True)) == len(visual)

    # a damaged file is reported as damaged, without advice to read it unsafely
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "arrays.pkl").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"not a readable checkpoint \(truncated or corrupt\?\)") as caught:
        load_source_checkpoint(tmp_path / "cut.pkl")
    assert "unsafe_pickle" not in str(caught.value)


def test_text_tower_of_another_clip_is_reported(clip_dir, tmp_path, caplog):
    source, clip = clip_dir
    text = {k: v + 0.01 for k, v in openai_text_from_clip(clip).items()}
    path = save_release(tmp_path / "r.pth", fine_tune(openai_visual_from_clip(clip)), text)
    with caplog.at_level(logging.WARNING, logger="maft_hf.hub.official_checkpoint"):
        _, report = convert_official_checkpoint(path, str(source), tmp_path / "out", local_files_only=True)
    assert report.text_tower_max_abs_diff == pytest.approx(0.01, abs=1e-6)
    assert "text tower differs" in caplog.text


@pytest.mark.slow
def test_script_output_loads_with_and_without_trust_remote_code(clip_dir, release, tmp_path):
    source, _ = clip_dir
    path, visual = release
    out = tmp_path / "maft-official"
    report = load_script().main(
        [
            "--checkpoint",
            str(path),
            "--clip",
            str(source),
            "--output_dir",
            str(out),
            "--local_files_only",
            "--input_image_size",
            "48",
            "--report_json",
            str(tmp_path / "report.json"),
        ]
    )
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "processor_config.json").is_file() or (out / "preprocessor_config.json").is_file()
    assert (tmp_path / "report.json").is_file() and report.used == sorted(visual)

    model = AutoModel.from_pretrained(out)
    assert type(model) is MaskAwareCLIPModel and model.config.vision_config.input_image_size == 48
    assert torch.equal(model.state_dict()["visual_projection.weight"], visual["proj"].t())

    code = (
        "import sys, torch\n"
        "from transformers import AutoModel, AutoProcessor\n"
        f"m = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        f"p = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "assert 'maft_hf' not in sys.modules, 'package was imported'\n"
        f"print(type(m).__name__, type(p).__name__, float(m.visual_projection.weight.sum()))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    name, processor, checksum = result.stdout.split()
    assert (name, processor) == ("MaskAwareCLIPModel", "MAFTProcessor")
    assert float(checksum) == pytest.approx(float(visual["proj"].sum()), abs=1e-4)
