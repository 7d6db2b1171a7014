"""Loading failures the command lines meet, each turned into one clear message (maft_hf.hub.loading)."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from maft_hf.cli import run
from maft_hf.hub.loading import load_model_and_processor
from maft_hf.inference.text_classifier import TextClassifierCache, build_text_classifier
from maft_hf.testing import TINY_TEXT, TINY_VISION, build_tiny_checkpoint, build_tiny_tokenizer


def segment_cli(tmp_path, model, *extra):
    """`maft-segment` on one small image; returns the one-line error it exits with."""
    image = tmp_path / "street.png"
    Image.fromarray(torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8).numpy()).save(image)
    argv = ["--model", str(model), "--images", str(image), "--vocabulary", "sky,car", "--proposals", "grid:2"]
    with pytest.raises(SystemExit) as excinfo:
        run("segment", [*argv, "--output_dir", str(tmp_path / "out"), "--offline", *extra])
    return str(excinfo.value.code)


@pytest.fixture
def checkpoint(tmp_path):
    return build_tiny_checkpoint(tmp_path / "tiny-maft")


def test_truncated_weights_name_the_file(checkpoint, tmp_path):
    weights = os.path.join(checkpoint, "model.safetensors")
    with open(weights, "rb") as f:
        data = f.read()
    with open(weights, "wb") as f:
        f.write(data[: len(data) // 2])
    message = segment_cli(tmp_path, checkpoint)
    assert "error: The weights file" in message and weights in message and "damaged" in message
    assert "Download or save the checkpoint again" in message


def test_cuda_device_without_cuda_is_explained(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = segment_cli(tmp_path, checkpoint, "--device", "cuda")
    assert "error: Device 'cuda' was asked for, but CUDA is not available" in message and "--device cpu" in message


def test_mistyped_local_folder_says_it_does_not_exist(checkpoint, tmp_path):
    typo = os.path.join(os.path.dirname(checkpoint), "tiny-mft")
    message = segment_cli(tmp_path, typo)
    assert f"The model folder {typo!r} does not exist" in message and "similar names there: tiny-maft" in message
    with pytest.raises(ValueError, match="does not exist"):
        load_model_and_processor("./no-such-folder/maft", local_files_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model checkpoint: it has no config.json"):
        load_model_and_processor(str(tmp_path / "empty"))


def test_plain_clip_folder_gets_the_conversion_hint(tmp_path):
    vision = {k: v for k, v in TINY_VISION.items() if k != "mask_start_layer"}
    CLIPModel(CLIPConfig(vision_config=vision, text_config=TINY_TEXT, projection_dim=16)).save_pretrained(
        tmp_path / "clip"
    )
    build_tiny_tokenizer(tmp_path / "clip")
    message = segment_cli(tmp_path, tmp_path / "clip")
    assert "is a plain CLIP checkpoint (model_type 'clip'), not a MAFT checkpoint" in message
    assert "convert_clip_checkpoint.py --clip" in message
    model, processor = load_model_and_processor(str(tmp_path / "clip"))  # fine-tuning converts it on the fly
    assert model.config.model_type == "maft"
    assert processor.image_processor.size == model.config.vision_config.input_image_size


def test_truncated_text_classifier_cache_is_recomputed_with_a_warning(checkpoint, tmp_path):
    model, processor = load_model_and_processor(checkpoint)
    cache_dir = tmp_path / "cache"
    expected = build_text_classifier(model, processor.tokenizer, ["sky", "car"], cache=cache_dir)
    (entry,) = cache_dir.iterdir()
    entry.write_bytes(entry.read_bytes()[:40])
    with pytest.warns(UserWarning, match=f"damaged text-classifier cache file {entry}"):
        again = build_text_classifier(
            model, processor.tokenizer, ["sky", "car"], cache=TextClassifierCache(0, cache_dir)
        )
    torch.testing.assert_close(again, expected)
    assert TextClassifierCache(0, cache_dir).get(entry.stem) is not None  # rewritten whole


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_plain_data_unpickler_reads_data_and_refuses_code(protocol):
    import collections
    import io

    from maft_hf.data.safe_pickle import load_plain_pickle

    data = {"names": ["wall"], "ids": np.arange(5, dtype=np.uint16), "set": {1}, "raw": b"\x00\xff"}
    data["ordered"] = collections.OrderedDict(x=np.float32(1.5))
    payload = pickle.dumps(data, protocol=protocol)
    loaded = load_plain_pickle(io.BytesIO(payload))
    assert loaded["ids"].dtype == np.uint16 and loaded["ids"].tolist() == list(range(5))
    assert {k: v for k, v in loaded.items() if k != "ids"} == {k: v for k, v in data.items() if k != "ids"}
    if protocol < 4:  # text-named globals: pickles written by NumPy 1 name numpy.core
        numpy_1 = payload.replace(b"numpy._core", b"numpy.core")
        assert load_plain_pickle(io.BytesIO(numpy_1))["ids"].tolist() == list(range(5))

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo unpickled",))

    with pytest.raises(pickle.UnpicklingError, match=r"refused to load \w+\.system: only plain data"):
        load_plain_pickle(io.BytesIO(pickle.dumps(Payload(), protocol=protocol)))
