"""The authors' system from the released files: a fake released checkpoint (IP-CLIP + FreeSeg generator, released key
layout) -> `maft-convert-official-checkpoint` -> `segment(..., "freeseg:<dir>", preprocessing="released")`, and
`maft-reproduce-paper` from the checkpoint and official-layout benchmark releases to one table."""

import importlib
import json

import numpy as np
import pytest
import torch
from freeseg_reference import TINY_CONFIG_OVERRIDES, RefFreeSeg, randomize_, released_state_dict
from PIL import Image
from test_official_conversion import PREFIX, fine_tune, openai_text_from_clip, openai_visual_from_clip
from transformers import CLIPConfig, CLIPModel

from maft_hf import MAFTProcessor, MaskAwareCLIPModel, segment
from maft_hf.proposals.freeseg import FreeSegProposals
from maft_hf.testing import TINY_TEXT, TINY_VISION, build_tiny_tokenizer

FREESEG_OPTIONS = {**TINY_CONFIG_OVERRIDES, "test_short_side": 64, "test_max_size": 256}
NAMES = ["sky", "grass", "road", "car", "tree"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """`(clip_dir, release.pth)`: a tiny CLIP and a released-layout checkpoint holding its fine-tuned image encoder,
    the text tower and a FreeSeg generator whose text width is the CLIP projection width."""
    root = tmp_path_factory.mktemp("release")
    vision = {k: v for k, v in TINY_VISION.items() if k != "mask_start_layer"}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=TINY_TEXT, projection_dim=16))
    clip.save_pretrained(root / "clip")
    build_tiny_tokenizer(root / "clip")
    state = {PREFIX + "visual." + k: v for k, v in fine_tune(openai_visual_from_clip(clip)).items()}
    state.update({PREFIX + k: v for k, v in openai_text_from_clip(clip).items()})
    generator = randomize_(RefFreeSeg(), seed=3)
    assert generator.cfg["text_dim"] == 16
    state.update(released_state_dict(generator, wrap=False, extras=False))
    torch.save({"model": state, "iteration": 1000}, root / "model_final.pth")
    return root / "clip", root / "model_final.pth"


def _convert(clip_dir, checkpoint, out, *extra):
    convert = importlib.import_module("maft_hf.cli.convert_official_checkpoint")
    options = [f"--freeseg_option={k}={json.dumps(v)}" for k, v in FREESEG_OPTIONS.items()]
    argv = ["--checkpoint", str(checkpoint), "--clip", str(clip_dir), "--output_dir", str(out), "--local_files_only"]
    return convert.main(argv + options + list(extra))


def test_released_files_segment_with_their_own_proposals(release, tmp_path):
    clip_dir, checkpoint = release
    _convert(clip_dir, checkpoint, tmp_path / "maft")
    assert (tmp_path / "maft" / "freeseg" / "config.json").is_file()
    model = MaskAwareCLIPModel.from_pretrained(tmp_path / "maft").eval()
    processor = MAFTProcessor.from_pretrained(tmp_path / "maft")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (75, 100, 3), dtype=np.uint8))
    (result,) = segment(
        image, NAMES, model, processor, f"freeseg:{tmp_path / 'maft' / 'freeseg'}", preprocessing="released"
    )
    assert result["segmentation"].shape == (75, 100)
    assert result["scores"].shape == (10, len(NAMES))  # the tiny generator's 10 queries, scored over the vocabulary
    assert 0 <= int(result["segmentation"].min()) and int(result["segmentation"].max()) < len(NAMES)
    # The generator is text-conditioned: a vocabulary larger than any it was trained on works.
    generator = FreeSegProposals(str(tmp_path / "maft" / "freeseg"))
    many = [f"class {i}" for i in range(23)]
    (big,) = segment(image, many, model, processor, generator, preprocessing="released")
    assert big["scores"].shape == (10, 23)


def test_checkpoint_without_generator_still_converts_the_ipclip_part(release, tmp_path, caplog):
    clip_dir, checkpoint = release
    state = torch.load(checkpoint, weights_only=True)["model"]
    kept = {k: v for k, v in state.items() if k.startswith(PREFIX)}
    torch.save({"model": kept}, tmp_path / "ipclip_only.pth")
    _convert(clip_dir, tmp_path / "ipclip_only.pth", tmp_path / "maft")
    assert (tmp_path / "maft" / "config.json").is_file() and not (tmp_path / "maft" / "freeseg").exists()
    assert "No FreeSeg proposal generator converted" in caplog.text and "backbone" in caplog.text


def _voc_release(root, count=3):
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    stems = [f"2007_{i:06d}" for i in range(count)]
    for stem in stems:
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{stem}.jpg")
        label = rng.integers(0, 21, (24, 32)).astype(np.uint8)
        Image.fromarray(label, mode="P").save(base / "SegmentationClass" / f"{stem}.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems) + "\n")


def _ade_release(root, count=2):
    base = root / "ade" / "ADEChallengeData2016"
    rng = np.random.default_rng(1)
    for i in range(1, count + 1):
        (base / "images" / "validation").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
        Image.fromarray(image).save(base / "images" / "validation" / f"ADE_val_{i:08d}.jpg")
        label = rng.integers(0, 151, (20, 28)).astype(np.uint8)
        Image.fromarray(label).save(base / "annotations" / "validation" / f"ADE_val_{i:08d}.png")


@pytest.mark.slow
def test_reproduce_paper_from_the_released_files(release, tmp_path, capsys):
    clip_dir, checkpoint = release
    data_root = tmp_path / "datasets"
    _voc_release(data_root)
    _ade_release(data_root)
    reproduce = importlib.import_module("maft_hf.cli.reproduce_paper")
    options = [f"--freeseg_option={k}={json.dumps(v)}" for k, v in FREESEG_OPTIONS.items()]
    argv = ["--checkpoint", str(checkpoint), "--clip", str(clip_dir), "--data_root", str(data_root)]
    argv += ["--output_dir", str(tmp_path / "out"), "--benchmarks", "ade20k_150", "pascal_voc_20", "--offline"]
    records = reproduce.main(argv + options + ["--cpu"])
    printed = capsys.readouterr().out
    generator_dir = tmp_path / "out" / "model" / "freeseg"
    assert f"proposals freeseg:{generator_dir}, preprocessing released, ensemble weight 0" in printed
    table = (tmp_path / "out" / "results.md").read_text()
    assert "A-150" in table and "PAS-20" in table and "29.1" in table and "90.0" in table  # the paper's row
    assert len(records) == 2
    for record in records:
        assert record["run"]["preprocessing"] == "released" and record["run"]["ensemble_weight"] == 0
        assert record["run"]["proposals"] == f"freeseg:{generator_dir}"
        assert 0 <= record["metrics"]["mIoU"] <= 100
    # Started again, nothing is converted or evaluated twice: the finished runs are reused.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "eval").rglob("results.json")}
    reproduce.main(argv + options + ["--cpu"])
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "eval").rglob("results.json")} == before


def test_fine_tuning_with_the_released_generator(tmp_path, monkeypatch):
    from maft_hf.cli import finetune
    from maft_hf.data import save_synthetic_dataset
    from maft_hf.proposals.freeseg.testing import build_tiny_freeseg
    from maft_hf.testing import build_tiny_checkpoint

    monkeypatch.chdir(tmp_path)
    build_tiny_checkpoint("maft")
    build_tiny_freeseg("freeseg")
    save_synthetic_dataset("data", 8, 4, image_size=48)
    argv = ["--cpu", "--offline", "--model_name_or_path", "maft", "--dataset_path", "data", "--output_dir", "out"]
    argv += ["--proposal_generator", "freeseg:freeseg", "--crop_size", "48", "--short_side", "48"]
    results = finetune.main(argv + ["--per_device_train_batch_size", "2", "--max_train_steps", "3"])
    assert results["train_steps"] == 3 and results["train_loss"] > 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_mistyped_freeseg_option_is_refused_before_anything_is_converted(release, tmp_path):
    clip_dir, checkpoint = release
    with pytest.raises(ValueError, match=r"\['res5_dilaton'\] are not FreeSegConfig fields"):
        _convert(clip_dir, checkpoint, tmp_path / "maft", "--freeseg_option=res5_dilaton=2")
    assert not (tmp_path / "maft").exists()
