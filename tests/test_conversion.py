"""Converting a plain CLIP checkpoint directory into a MAFT checkpoint."""

import importlib
import pathlib

import pytest
import torch
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
    assert preset_for(l14) == {"input_image_size": 476, "mask_start_layer": 16}
