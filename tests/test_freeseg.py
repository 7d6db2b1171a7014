"""FreeSeg generator: conversion from the released layout, equality with an independent reference forward, the
proposal source and its save/load round trip. Uses the tiny random reference of `freeseg_reference.py`."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
from freeseg_reference import (
    RELEASED,
    TINY_CONFIG_OVERRIDES,
    RefFreeSeg,
    randomize_,
    released_state_dict,
    sem_seg_postprocess,
)

from maft_hf.proposals import GridProposals, load_proposal_generator
from maft_hf.proposals.freeseg import (
    FreeSegConfig,
    FreeSegModel,
    FreeSegProposals,
    convert_freeseg_state_dict,
    save_freeseg_generator,
)

TEST_SIZES = dict(test_short_side=64, test_max_size=256)  # the 640 / 2560 of the release, shrunk for speed
ATOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return randomize_(RefFreeSeg(), seed=0).eval()


@pytest.fixture(scope="module")
def released(reference):
    return released_state_dict(reference)


@pytest.fixture(scope="module")
def generator(released):
    config, state_dict = convert_freeseg_state_dict(released, **TINY_CONFIG_OVERRIDES, **TEST_SIZES)
    model = FreeSegModel(config)
    model.load_state_dict(state_dict, strict=True)
    return FreeSegProposals(model.eval())


@pytest.fixture(scope="module")
def saved_folder(released, tmp_path_factory):
    return save_freeseg_generator(released, tmp_path_factory.mktemp("freeseg"), **TINY_CONFIG_OVERRIDES, **TEST_SIZES)


def _image(height, width, seed):
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _vocabulary(k, seed=0):
    embeddings = F.normalize(torch.randn(k, 16, generator=torch.Generator().manual_seed(100 + seed)), dim=-1)
    return [f"thing{i}" for i in range(k)], embeddings


def _fingerprint(tensor):
    return (tuple(tensor.shape), hashlib.sha1(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest())


@pytest.mark.parametrize("num_classes", [5, 20])
def test_matches_the_reference_forward(reference, generator, num_classes):
    names, classifier = _vocabulary(num_classes)
    for index, (height, width) in enumerate([(75, 100), (100, 67)]):
        image = _image(height, width, seed=index)
        proposals = generator([image], class_names=names, text_classifier=classifier)[0]
        resized = generator.resized_size(height, width)
        assert min(resized) == 64
        from maft_hf.data.transforms import resize_image

        ref = reference([resize_image(image, resized)], classifier)
        text = generator.model.text_features_with_void(classifier)
        pixel_values = torch.zeros(1, 3, *ref["mask_probs"].shape[-2:])
        pixel_values[0, :, : resized[0], : resized[1]] = (
            resize_image(image, resized).float() - reference.pixel_mean
        ) / reference.pixel_std
        with torch.no_grad():
            out = generator.model(pixel_values, text)
        assert (
            out.mask_logits.shape
            == ref["mask_logits"].shape
            == (1, 10, pixel_values.shape[-2] // 4, pixel_values.shape[-1] // 4)
        )
        assert out.class_logits.shape == ref["class_logits"].shape == (1, 10, num_classes + 1)
        torch.testing.assert_close(out.mask_logits, ref["mask_logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.class_logits, ref["class_logits"], atol=ATOL, rtol=0)
        assert ref["mask_logits"].abs().max() > 1 and ref["class_logits"].std() > 1  # not a degenerate comparison

        # the proposals at the original size: crop + sem_seg_postprocess of the reference's mask_results
        expected_masks = sem_seg_postprocess(ref["mask_probs"][0], resized, height, width)
        torch.testing.assert_close(proposals.masks, expected_masks, atol=ATOL, rtol=0)
        expected_scores = F.softmax(ref["class_logits"][0], dim=-1)[:, :-1]
        torch.testing.assert_close(proposals.class_scores, expected_scores, atol=ATOL, rtol=0)
        assert proposals.class_names == names


def test_canvas_proposals_match_the_reference_batch(reference, generator):
    names, classifier = _vocabulary(5)
    images = [_image(64, 85, 3), _image(96, 64, 4)]  # already at the working scale; padded together to 96 x 96
    canvas = generator.propose_on_canvas(images, class_names=names, text_classifier=classifier)
    ref = reference(images, classifier)
    for index, (proposals, valid_size) in enumerate(canvas):
        assert valid_size == tuple(images[index].shape[-2:])
        assert proposals.masks.shape == (10, 96, 96)
        torch.testing.assert_close(proposals.masks, ref["mask_probs"][index], atol=ATOL, rtol=0)
        torch.testing.assert_close(
            proposals.class_scores, F.softmax(ref["class_logits"][index], -1)[:, :-1], atol=ATOL, rtol=0
        )


def test_every_generator_tensor_is_used_exactly_once(released):
    config, state_dict = convert_freeseg_state_dict(released, **TINY_CONFIG_OVERRIDES)
    source = {
        k: v
        for k, v in released["model"].items()
        if k.startswith(("backbone.", "sem_seg_head.")) or k == "clip_adapter.non_object_embedding"
    }
    # random tensors are unique, so equal multisets of fingerprints mean a one-to-one mapping
    assert sorted(map(_fingerprint, source.values())) == sorted(map(_fingerprint, state_dict.values()))
    assert len(state_dict) == len(source)
    assert config.decoder_layers == 3 and config.num_queries == 10 and config.text_dim == 16
    assert config.encoder_n_points == 2 and config.class_embed_hidden_dim == 24


def test_unexpected_and_missing_tensors_raise(released):
    extra = {"model": {**released["model"], "sem_seg_head.predictor.extra_head.weight": torch.zeros(3)}}
    with pytest.raises(ValueError, match="unexpected tensors: predictor.extra_head.weight"):
        convert_freeseg_state_dict(extra, **TINY_CONFIG_OVERRIDES)
    missing = {"model": {k: v for k, v in released["model"].items() if k != "sem_seg_head.predictor.decoder_norm.bias"}}
    with pytest.raises(ValueError, match="missing tensors: predictor.decoder_norm.bias"):
        convert_freeseg_state_dict(missing, **TINY_CONFIG_OVERRIDES)
    reshaped = {"model": {**released["model"], "sem_seg_head.interaction.gamma": torch.zeros(7)}}
    with pytest.raises(ValueError, match="interaction.gamma: expected"):
        convert_freeseg_state_dict(reshaped, **TINY_CONFIG_OVERRIDES)


def test_checkpoint_without_generator_raises(released):
    clip_only = {
        "model": {k: v for k, v in released["model"].items() if k.startswith(("clip_adapter.clip_model", "IPCLIP"))}
    }
    with pytest.raises(ValueError, match="no FreeSeg generator weights"):
        convert_freeseg_state_dict(clip_only)
    with pytest.raises(ValueError, match="no FreeSeg generator weights"):
        save_freeseg_generator(clip_only, "unused-folder")


def test_save_load_round_trip_is_bit_exact(released, saved_folder, generator, tmp_path):
    loaded = FreeSegModel.from_pretrained(saved_folder, local_files_only=True).eval()
    for key, value in generator.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    names, classifier = _vocabulary(5)
    image = _image(75, 100, 0)
    first = generator([image], class_names=names, text_classifier=classifier)[0]
    second = FreeSegProposals(loaded)([image], class_names=names, text_classifier=classifier)[0]
    assert torch.equal(first.masks, second.masks) and torch.equal(first.class_scores, second.class_scores)
    # from a released .pth on disk (read with the safe loader)
    path = tmp_path / "model_final.pth"
    torch.save(released, path)
    again = FreeSegModel.from_pretrained(
        save_freeseg_generator(path, tmp_path / "out", **TINY_CONFIG_OVERRIDES, **TEST_SIZES), local_files_only=True
    )
    assert all(torch.equal(again.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_load_proposal_generator_spec(saved_folder):
    generator = load_proposal_generator(f"freeseg:{saved_folder}", local_files_only=True)
    assert isinstance(generator, FreeSegProposals) and generator.needs_vocabulary
    assert not GridProposals(2).needs_vocabulary
    names, classifier = _vocabulary(5)
    images = [_image(75, 100, 0), _image(100, 67, 1).permute(1, 2, 0).numpy()]
    results = generator(images, class_names=names, text_classifier=classifier)
    for proposals, size in zip(results, [(75, 100), (100, 67)]):
        assert proposals.masks.shape == (10, *size)
        assert proposals.masks.min() >= 0 and proposals.masks.max() <= 1
        assert proposals.class_scores.shape == (10, 5)
        assert (proposals.class_scores.sum(-1) <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="needs the vocabulary"):
        generator(images)
    with pytest.raises(ValueError, match="no text encoder"):
        generator(images, class_names=names)


def test_class_names_with_a_text_encoder(generator):
    from maft_hf import MaskAwareCLIPModel
    from maft_hf.inference.text_classifier import build_text_classifier
    from maft_hf.testing import build_tiny_tokenizer, tiny_maft_config

    torch.manual_seed(0)
    clip = MaskAwareCLIPModel(tiny_maft_config()).eval()
    tokenizer = build_tiny_tokenizer()
    names = ["cat", "sky", "building, edifice"]
    classifier = build_text_classifier(clip, tokenizer, names)
    expected = generator([_image(75, 100, 0)], class_names=names, text_classifier=classifier)[0]
    with_encoder = FreeSegProposals(generator.model, text_encoder=clip, tokenizer=tokenizer)
    got = with_encoder([_image(75, 100, 0)], class_names=names)[0]
    assert torch.equal(got.masks, expected.masks) and torch.equal(got.class_scores, expected.class_scores)


def test_released_sizes_convert_to_the_default_config():
    """A checkpoint of the released sizes (random, no forward) converts to `FreeSegConfig()` with no override."""
    with torch.device("meta"):
        reference = RefFreeSeg(RELEASED)
    released = {"model": {k: torch.empty_like(v, device="cpu") for k, v in reference.state_dict().items()}}
    config, state_dict = convert_freeseg_state_dict(released)
    defaults = FreeSegConfig().to_dict()
    for key in ("transformers_version", "architectures"):
        defaults.pop(key, None)
    converted = {key: value for key, value in config.to_dict().items() if key in defaults}
    assert converted == defaults
    assert len(state_dict) == len(released["model"])


def test_tiny_builder_loads_with_the_spec(tmp_path):
    from maft_hf.proposals.freeseg.testing import build_tiny_freeseg

    generator = load_proposal_generator(f"freeseg:{build_tiny_freeseg(tmp_path / 'tiny')}", local_files_only=True)
    names, classifier = _vocabulary(3)
    proposals = generator([_image(40, 56, 0)], class_names=names, text_classifier=classifier)[0]
    assert proposals.masks.shape == (10, 40, 56) and proposals.class_scores.shape == (10, 3)
