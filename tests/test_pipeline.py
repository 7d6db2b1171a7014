"""The segment() function API and the "open-vocabulary-segmentation" transformers pipeline."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from maft_hf import MaskAwareCLIPModel
from maft_hf.inference.pipeline import OpenVocabularySegmentationPipeline, register_pipeline, segment
from maft_hf.model.processing_maft import MAFTImageProcessor, MAFTProcessor
from maft_hf.proposals import ProposalGenerator, Proposals, UserMaskProposals
from maft_hf.testing import build_tiny_checkpoint, build_tiny_tokenizer, tiny_maft_config

NAMES = ["sky", "grass", "road, route", "car"]
TEMPLATES = ["a {}.", "the {}"]
# A 4x4 label map with 4 regions; UserMaskProposals resizes its masks to every image.
LABELS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], dtype=np.int64)


@pytest.fixture
def model():
    return MaskAwareCLIPModel(tiny_maft_config(vision={"input_image_size": 32})).eval()


@pytest.fixture
def processor():
    return MAFTProcessor(MAFTImageProcessor(size=32), build_tiny_tokenizer())


def random_image(height, width, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


class FakeGenerator(ProposalGenerator):
    """Random soft masks at each image's size, with class scores over its own 3 classes."""

    names = ["Sky", "car", "person"]

    def __call__(self, images):
        out = []
        for index, image in enumerate(images):
            g = torch.Generator().manual_seed(index)
            masks = torch.rand(5, image.height, image.width, generator=g)
            scores = torch.rand(5, 3, generator=g).softmax(-1)
            out.append(Proposals(masks=masks, class_scores=scores, class_names=self.names))
        return out


def reference_segmentation(model, processor, image, masks, names):
    """Full-size masks straight into the model, then the formula: argmax_c sum_n softmax(logits)[n, c] M[n]."""
    pixel_values = processor.image_processor(image)["pixel_values"]
    with torch.no_grad():
        prompts = [t.format(n) for n in names for t in TEMPLATES]
        tokens = processor.tokenizer(prompts, padding=True, return_tensors="pt")
        text = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
        text = F.normalize(text.reshape(len(names), len(TEMPLATES), -1).mean(1), dim=-1)
        mask_embeds = F.normalize(model.get_mask_features(pixel_values, masks[None]).pooler_output[0], dim=-1)
        probs = (model.logit_scale.exp() * mask_embeds @ text.t()).softmax(-1)
    return torch.einsum("nc,nhw->chw", probs, masks).argmax(0), probs


def test_matches_the_formula_with_full_size_masks(model, processor):
    image = random_image(40, 28)
    result = segment(image, NAMES, model, processor, UserMaskProposals(LABELS), templates=TEMPLATES)
    (output,) = result
    masks = UserMaskProposals(LABELS)([image])[0].masks
    expected_map, expected_probs = reference_segmentation(model, processor, image, masks, NAMES)
    torch.testing.assert_close(output["scores"], expected_probs, atol=1e-5, rtol=1e-4)
    assert torch.equal(output["segmentation"], expected_map)
    assert output["class_names"] == NAMES


def test_matches_the_formula_with_soft_masks(model, processor):
    image = random_image(40, 28)
    (output,) = segment(image, NAMES, model, processor, FakeGenerator(), ensemble_weight=None, templates=TEMPLATES)
    masks = FakeGenerator()([image])[0].masks
    expected_map, expected_probs = reference_segmentation(model, processor, image, masks, NAMES)
    torch.testing.assert_close(output["scores"], expected_probs, atol=1e-5, rtol=1e-4)
    assert torch.equal(output["segmentation"], expected_map)


def test_output_has_image_size_and_valid_ids(model, processor):
    images = [random_image(40, 28), random_image(17, 50, seed=1)]
    results = segment(images, NAMES, model, processor, FakeGenerator(), templates=TEMPLATES)
    for image, output in zip(images, results):
        seg = output["segmentation"]
        assert seg.dtype == torch.long and tuple(seg.shape) == (image.height, image.width)
        assert int(seg.min()) >= 0 and int(seg.max()) < len(NAMES)
        assert output["scores"].shape == (5, len(NAMES))


def test_batched_equals_one_by_one(model, processor):
    images = [random_image(40, 28), random_image(17, 50, seed=1), random_image(32, 32, seed=2)]
    # different proposal counts per image exercise the padding
    proposals = [Proposals(masks=torch.rand(n, im.height, im.width)) for n, im in zip((3, 7, 1), images)]
    batched = segment(images, NAMES, model, processor, proposals=proposals, templates=TEMPLATES, batch_size=3)
    for image, item, together in zip(images, proposals, batched):
        (alone,) = segment(image, NAMES, model, processor, proposals=[item], templates=TEMPLATES, batch_size=1)
        assert torch.equal(alone["segmentation"], together["segmentation"])
        torch.testing.assert_close(alone["scores"], together["scores"], atol=1e-5, rtol=1e-4)


def test_ensemble_with_generator_scores(model, processor):
    image = random_image(24, 24)
    plain = segment(image, NAMES, model, processor, FakeGenerator(), ensemble_weight=0, templates=TEMPLATES)[0]
    mixed = segment(image, NAMES, model, processor, FakeGenerator(), templates=TEMPLATES)[0]  # default lambda 0.7
    generator_scores = FakeGenerator()([image])[0].class_scores
    clip = plain["scores"]
    expected = clip.pow(0.7)  # unseen: grass, "road, route"
    expected[:, 0] = generator_scores[:, 0].pow(0.7) * clip[:, 0].pow(0.3)  # sky <- "Sky"
    expected[:, 3] = generator_scores[:, 1].pow(0.7) * clip[:, 3].pow(0.3)  # car <- "car"
    torch.testing.assert_close(mixed["scores"], expected)


def test_image_formats(model, processor, tmp_path):
    rgb = random_image(20, 30)
    reference = segment(rgb, NAMES, model, processor, UserMaskProposals(LABELS), templates=TEMPLATES)[0]
    path = tmp_path / "image.png"
    rgb.save(path)
    rgba = rgb.convert("RGBA")
    for variant in (str(path), path, np.asarray(rgb), torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1), rgba):
        output = segment(variant, NAMES, model, processor, UserMaskProposals(LABELS), templates=TEMPLATES)[0]
        assert torch.equal(output["segmentation"], reference["segmentation"])
    gray = segment(rgb.convert("L"), NAMES, model, processor, UserMaskProposals(LABELS), templates=TEMPLATES)[0]
    assert tuple(gray["segmentation"].shape) == (20, 30)


def test_shipped_vocabulary_name(model, processor):
    output = segment(random_image(16, 16), "synthetic", model, processor, "grid:2", templates=TEMPLATES)[0]
    assert len(output["class_names"]) == 8 and int(output["segmentation"].max()) < 8


def test_bad_inputs(model, processor, tmp_path):
    image = random_image(16, 16)
    generator = UserMaskProposals(LABELS)
    with pytest.raises(ValueError, match="empty"):
        segment(image, [], model, processor, generator)
    with pytest.raises(ValueError, match="duplicate"):
        segment(image, ["cat", "Cat"], model, processor, generator)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        segment(str(broken), NAMES, model, processor, generator)
    with pytest.raises(ValueError, match="No images"):
        segment([], NAMES, model, processor, generator)
    with pytest.raises(ValueError, match="proposal generator is required"):
        segment(image, NAMES, model, processor, None)
    with pytest.raises(ValueError, match=r"\(16, 16\).*\(8, 8\)"):
        segment(image, NAMES, model, processor, proposals=[Proposals(masks=torch.rand(2, 8, 8))])


@pytest.fixture
def checkpoint(tmp_path):
    return build_tiny_checkpoint(tmp_path / "tiny-maft")


def test_transformers_pipeline_matches_segment(checkpoint):
    from transformers import AutoProcessor, pipeline

    register_pipeline()
    register_pipeline()  # idempotent
    pipe = pipeline(
        "open-vocabulary-segmentation", model=checkpoint, proposal_generator=UserMaskProposals(LABELS), device="cpu"
    )
    assert isinstance(pipe, OpenVocabularySegmentationPipeline)
    images = [random_image(40, 28), random_image(17, 50, seed=1)]
    outputs = pipe(images, candidate_labels=NAMES, templates=TEMPLATES)
    assert isinstance(outputs, list) and len(outputs) == 2
    model = MaskAwareCLIPModel.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    expected = segment(images, NAMES, model, processor, UserMaskProposals(LABELS), templates=TEMPLATES)
    for got, want in zip(outputs, expected):
        assert torch.equal(got["segmentation"], want["segmentation"])
        torch.testing.assert_close(got["scores"], want["scores"], atol=1e-5, rtol=1e-4)
        assert got["class_names"] == NAMES

    single = pipe(images[0], candidate_labels=NAMES, templates=TEMPLATES, proposal_masks=LABELS)
    assert torch.equal(single["segmentation"], expected[0]["segmentation"])

    options = dict(templates=TEMPLATES, preprocessing="released", ensemble_formula="released", unlabeled_id=9)
    released = pipe(images[1], candidate_labels=NAMES, **options)
    (want,) = segment(images[1], NAMES, model, processor, UserMaskProposals(LABELS), **options)
    assert torch.equal(released["segmentation"], want["segmentation"])
    torch.testing.assert_close(released["scores"], want["scores"])
    assert not torch.allclose(want["scores"], expected[1]["scores"])  # the released input differs from the direct one


def test_transformers_pipeline_errors(checkpoint):
    from transformers import pipeline

    register_pipeline()
    pipe = pipeline("open-vocabulary-segmentation", model=checkpoint, device="cpu")
    image = random_image(16, 16)
    with pytest.raises(ValueError, match="candidate_labels"):
        pipe(image)
    with pytest.raises(ValueError, match="proposal generator is required"):
        pipe(image, candidate_labels=NAMES)
    with pytest.raises(ValueError, match="duplicate"):
        pipe(image, candidate_labels=["a", "a"], proposal_generator="grid:2")


def test_working_resolution_proposals_give_the_map_of_the_resized_masks(model, processor):
    # Proposals at 24x18 standing for a 200x150 image (Proposals.image_size): the map is the one of the masks resized
    # to the image (bilinear, align_corners=False), computed block by block.
    image = random_image(200, 150, seed=3)
    low = F.interpolate(torch.rand(6, 1, 4, 3) * 8 - 4, size=(24, 18), mode="bilinear")[:, 0].sigmoid()
    full = F.interpolate(low[None], size=(200, 150), mode="bilinear", align_corners=False)[0]
    text = torch.randn(len(NAMES), 16, generator=torch.Generator().manual_seed(0))
    (new,) = segment(
        image,
        NAMES,
        model,
        processor,
        proposals=[Proposals(masks=low, image_size=(200, 150))],
        text_classifier=text,
        ensemble_weight=None,
    )
    (old,) = segment(image, NAMES, model, processor, proposals=[Proposals(masks=full)], text_classifier=text)
    scores = torch.einsum("nc,nhw->chw", old["scores"], full)
    top2 = scores.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-4
    assert decided.float().mean() > 0.99
    assert torch.equal(new["segmentation"][decided], old["segmentation"][decided])
    with pytest.raises(ValueError, match=r"cover the image's size \(H, W\) = \(200, 150\).*\(20, 15\)"):
        segment(
            image, NAMES, model, processor, proposals=[Proposals(masks=low, image_size=(20, 15))], text_classifier=text
        )


def test_unlabeled_id_through_segment_and_the_pipeline_keywords(model, processor):
    image = random_image(20, 30, seed=4)
    masks = torch.zeros(2, 20, 30)
    masks[0, :, :10], masks[1, :, 10:20] = 1.0, 1.0  # the right third is covered by no proposal
    text = torch.randn(len(NAMES), 16, generator=torch.Generator().manual_seed(1))
    kwargs = dict(proposals=[Proposals(masks=masks)], text_classifier=text)
    (default,) = segment(image, NAMES, model, processor, **kwargs)
    (marked,) = segment(image, NAMES, model, processor, unlabeled_id=255, **kwargs)
    assert (default["segmentation"][:, 20:] == 0).all()  # documented default: uncovered pixels get class 0
    assert (marked["segmentation"][:, 20:] == 255).all()
    assert torch.equal(marked["segmentation"][:, :20], default["segmentation"][:, :20])


def test_proposal_values_are_checked_where_they_enter(model, processor):
    image = random_image(8, 8)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], got values in \[-3, 3\]"):
        segment(
            image,
            NAMES,
            model,
            processor,
            proposals=[Proposals(masks=torch.full((2, 8, 8), 3.0) * torch.tensor([1.0, -1.0]).view(2, 1, 1))],
        )
