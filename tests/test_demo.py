"""The README's main command (scripts/demo.py) runs end to end offline and writes its outputs."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m 'not slow'

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("maft_demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    metrics = demo.main(
        [
            "--output_dir",
            str(tmp_path / "demo"),
            "--max_train_steps",
            "4",
            "--num_train",
            "8",
            "--num_test",
            "4",
            "--image_size",
            "32",
        ]
    )
    out = tmp_path / "demo"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_mIoU_before"] == metrics["test_mIoU_before"] and 0 <= saved["test_mIoU_after"] <= 100
    assert saved["training"]  # the fine-tuning run reported its results
    overlay = Image.open(out / "scene_overlay.png")
    seg = np.array(Image.open(out / "scene_map.png"))
    scene = Image.open(ROOT / "examples" / "images" / "scene.png")
    assert seg.shape == (scene.height, scene.width) and int(seg.max()) < 8
    assert overlay.height == scene.height
    assert (out / "tiny-maft-finetuned" / "model.safetensors").is_file()
