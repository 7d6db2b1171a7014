"""The released test-time path and ensemble against references written here from the authors' code (detectron2
ResizeShortestEdge / ResizeTransform / sem_seg_postprocess and MAFT's semantic inference), not from the package."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from maft_hf import MaskAwareCLIPModel
from maft_hf.inference.pipeline import proposal_class_scores, segment
from maft_hf.model.processing_maft import MAFTImageProcessor, MAFTProcessor
from maft_hf.proposals import ProposalGenerator, Proposals
from maft_hf.proposals.universal import class_probabilities
from maft_hf.testing import build_tiny_tokenizer, tiny_maft_config

MEAN = np.array([0.48145466, 0.4578275, 0.40821073]) * 255
STD = np.array([0.26862954, 0.26130258, 0.27577711]) * 255
SIZES = [(375, 500), (500, 333), (640, 640), (300, 1700)]  # (H, W); 300x1700 -> long side capped at 2560


def released_size(height, width):
    """detectron2 ResizeShortestEdge(640, max_size=2560).get_output_shape."""
    scale = 640 / min(height, width)
    if max(height, width) * scale > 2560:
        scale = 2560 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def released_pixels(image: Image.Image, size: int):
    """PIL bilinear resize on uint8 (ResizeTransform), CLIP normalisation, zero padding to 32, squeeze to size."""
    height, width = released_size(image.height, image.width)
    resized = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float64)
    normalised = (resized - MEAN) / STD
    canvas = (int(np.ceil(height / 32) * 32), int(np.ceil(width / 32) * 32))
    padded = np.zeros((*canvas, 3))
    padded[:height, :width] = normalised
    tensor = torch.from_numpy(padded).permute(2, 0, 1)[None]
    pixels = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0].float()
    return pixels, (height, width), canvas


def random_image(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("hw", SIZES)
def test_released_preprocessing_matches_the_reference(hw):
    assert released_size(300, 1700) == (452, 2560)  # the cap applies to this case
    image = random_image(*hw)
    expected, resized, canvas = released_pixels(image, 480)
    out = MAFTImageProcessor()(image, preprocessing="released")
    torch.testing.assert_close(out["pixel_values"][0], expected, atol=5e-4, rtol=0)  # float32 vs 64
    assert out["resized_sizes"].tolist() == [list(resized)] and out["canvas_sizes"].tolist() == [list(canvas)]
    # the processor's default recipe and MAFTProcessor route the keyword the same way
    default = MAFTImageProcessor(preprocessing="released")(image)["pixel_values"]
    assert torch.equal(default, out["pixel_values"])
    wrapped = MAFTProcessor(MAFTImageProcessor(), build_tiny_tokenizer())(images=image, preprocessing="released")
    assert torch.equal(wrapped["pixel_values"], out["pixel_values"])


def test_unknown_preprocessing_is_refused():
    with pytest.raises(ValueError, match=r"preprocessing must be one of \('direct', 'released'\), got 'exact'"):
        MAFTImageProcessor()(random_image(8, 8), preprocessing="exact")


# ---- the whole released semantic-map path --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return MaskAwareCLIPModel(tiny_maft_config(vision={"input_image_size": 32})).eval()


@pytest.fixture(scope="module")
def processor():
    return MAFTProcessor(MAFTImageProcessor(size=32), build_tiny_tokenizer())


def soft_masks(num, height, width, seed):
    """Smooth random masks (a few blobs), so that the argmax is decided away from float noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(num, 1, 5, 6, generator=g) * 6 - 3
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[:, 0].sigmoid()


def reference_map(model, image, canvas_masks, resized, text, size=32):
    """MAFT semantic inference as released: IP-CLIP on the padded canvas, A = softmax(logit_scale cos), score map
    einsum on the canvas, crop to the resized image, bilinear (align_corners=False) to the original size, argmax."""
    pixels, _, _ = released_pixels(image, size)
    with torch.no_grad():
        embeds = F.normalize(model.get_mask_features(pixels[None], canvas_masks[None]).pooler_output[0], dim=-1)
        probs = (model.logit_scale.exp() * embeds @ F.normalize(text, dim=-1).t()).softmax(-1)
    scores = torch.einsum("nc,nhw->chw", probs, canvas_masks)[:, : resized[0], : resized[1]]
    scores = F.interpolate(scores[None], size=(image.height, image.width), mode="bilinear", align_corners=False)[0]
    return scores, probs


def assert_same_map(result, scores, margin=1e-4):
    top2 = scores.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > margin
    assert decided.float().mean() > 0.99
    assert torch.equal(result[decided], scores.argmax(0)[decided])


class ImageSizeGenerator(ProposalGenerator):
    def __call__(self, images):
        return [Proposals(masks=soft_masks(6, im.height, im.width, seed=im.width)) for im in images]


@pytest.mark.parametrize("hw", [(75, 100), (100, 67), (60, 340)])
def test_released_path_with_proposals_at_the_image_size(model, processor, hw):
    image = random_image(*hw, seed=1)
    text = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    (result,) = segment(
        image,
        ["a", "b", "c", "d"],
        model,
        processor,
        ImageSizeGenerator(),
        text_classifier=text,
        preprocessing="released",
    )
    _, resized, canvas = released_pixels(image, 32)
    masks = soft_masks(6, *hw, seed=hw[1])
    on_canvas = F.interpolate(masks[None], size=resized, mode="bilinear", align_corners=False)[0]
    on_canvas = F.pad(on_canvas, (0, canvas[1] - resized[1], 0, canvas[0] - resized[0]))
    scores, probs = reference_map(model, image, on_canvas, resized, text)
    assert result["segmentation"].shape == hw
    torch.testing.assert_close(result["scores"], probs, atol=1e-5, rtol=1e-4)
    assert_same_map(result["segmentation"], scores)


class CanvasGenerator(ProposalGenerator):
    """Stands for FreeSeg: needs the vocabulary, proposes on the padded canvas of the 640-scale image."""

    needs_vocabulary = True

    def __init__(self):
        self.calls = []

    def __call__(self, images, class_names=None, text_classifier=None):
        raise AssertionError("the released path must use propose_on_canvas")

    def propose_on_canvas(self, images, class_names=None, text_classifier=None):
        self.calls.append((list(class_names), tuple(text_classifier.shape), [tuple(im.shape) for im in images]))
        (image,) = images
        canvas = [int(np.ceil(side / 32) * 32) for side in image.shape[-2:]]
        return [Proposals(masks=soft_masks(5, *canvas, seed=7))]


def test_released_path_uses_the_canvas_method_with_the_vocabulary(model, processor):
    image = random_image(90, 120, seed=2)
    text = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    generator = CanvasGenerator()
    (result,) = segment(
        image, ["x", "y", "z"], model, processor, generator, text_classifier=text, preprocessing="released"
    )
    _, resized, canvas = released_pixels(image, 32)
    assert generator.calls == [(["x", "y", "z"], (3, 16), [(3, *resized)])]
    scores, _ = reference_map(model, image, soft_masks(5, *canvas, seed=7), resized, text)
    assert_same_map(result["segmentation"], scores)


# ---- the released ensemble ------------------------------------------------------------------------------------------


def test_released_ensemble_matches_the_reference():
    weight = 0.35
    clip_logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.5, -0.5, 0.0]])
    # the generator's logits over K = 3 classes + void (last column)
    generator_logits = torch.tensor([[1.0, 0.0, -1.0, 0.5], [0.2, 2.0, 0.1, 3.0], [0.0, 0.0, 1.0, -2.0]])
    masks = torch.zeros(3, 4, 4)
    masks[0, :2] = 0.9
    masks[1] = 0.5  # empty: no value above 0.5
    masks[2, 3, 3] = 0.51  # one pixel above 0.5: not empty
    # reference: softmax over K + 1, void dropped after; A = A_p^(1-w) * A_c^w for every class, A_c = 1 if empty
    exp = generator_logits.double().exp()
    a_p = (exp / exp.sum(1, keepdim=True))[:, :3]
    a_c = clip_logits.double().softmax(-1)
    a_c[1] = 1.0
    expected = (a_p ** (1 - weight) * a_c**weight).float()
    names = ["cat", "dog", "sky"]
    proposals = Proposals(
        masks=masks, class_scores=class_probabilities(generator_logits, renormalize=False), class_names=names
    )
    result = proposal_class_scores(clip_logits, proposals, names, weight, "released")
    torch.testing.assert_close(result, expected, atol=1e-6, rtol=1e-5)
    # the paper's formula differs: lambda on the generator for seen classes
    paper = proposal_class_scores(clip_logits, proposals, names, weight, "paper")
    torch.testing.assert_close(paper, (a_p**weight * clip_logits.double().softmax(-1) ** (1 - weight)).float())
    # On the released canvas only the image's part counts: proposal 2's one pixel above 0.5 lies in the padding of a
    # 3 x 3 image on a 4 x 4 canvas, so there it is empty too (the release crops the masks before the test).
    a_c[2] = 1.0
    cropped = proposal_class_scores(clip_logits, proposals, names, weight, "released", valid_size=(3, 3))
    torch.testing.assert_close(cropped, (a_p ** (1 - weight) * a_c**weight).float(), atol=1e-6, rtol=1e-5)


class RenormalizingGenerator(ImageSizeGenerator):
    renormalize_classes = True


def test_released_ensemble_refuses_renormalised_generator_scores(model, processor):
    with pytest.raises(ValueError, match="renormalize_classes=False"):
        segment(random_image(8, 8), ["a"], model, processor, RenormalizingGenerator(), ensemble_formula="released")
    with pytest.raises(ValueError, match=r"ensemble_formula must be one of \('paper', 'released'\)"):
        segment(random_image(8, 8), ["a"], model, processor, ImageSizeGenerator(), ensemble_formula="zsseg")


def _labelled(images):
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    labels = [Image.fromarray((np.arange(im.height * im.width).reshape(im.height, im.width) % 3).astype(np.uint8))
              for im in images]  # fmt: skip
    features = Features({"image": ImageFeature(), "label": ImageFeature()})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_released_evaluation_proposes_on_the_canvas_and_equals_segment(model, processor):
    from maft_hf.evaluation.loop import evaluate_segmentation
    from maft_hf.evaluation.metrics import ConfusionMatrix

    images = [random_image(90, 120, seed=2), random_image(70, 50, seed=3)]
    text = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    names = ["x", "y", "z"]
    options = dict(text_classifier=text, ensemble_weight=0)
    results = evaluate_segmentation(
        model, processor, _labelled(images), names, CanvasGenerator(), progress=False,
        segment_kwargs={"preprocessing": "released"}, **options,
    )  # fmt: skip
    expected = ConfusionMatrix(3, 255)
    for image, label in zip(images, _labelled(images)["label"]):
        (out,) = segment(image, names, model, processor, CanvasGenerator(), preprocessing="released", **options)
        expected.update(out["segmentation"], torch.as_tensor(np.array(label)))
    assert torch.equal(results["confusion_matrix"].matrix.cpu(), expected.matrix.cpu())


def test_released_ensemble_refusal_holds_in_evaluation_and_pipeline_calls(model, processor, tmp_path):
    from transformers import pipeline

    from maft_hf.evaluation.loop import evaluate_segmentation

    dataset = _labelled([random_image(8, 8)])
    with pytest.raises(ValueError, match="renormalize_classes=False"):
        evaluate_segmentation(
            model, processor, dataset, ["x", "y", "z"], RenormalizingGenerator(), progress=False,
            segment_kwargs={"ensemble_formula": "released"},
        )  # fmt: skip
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    pipe = pipeline("open-vocabulary-segmentation", model=str(tmp_path), proposal_generator=RenormalizingGenerator())
    with pytest.raises(ValueError, match="renormalize_classes=False"):
        pipe(random_image(8, 8), candidate_labels=["a", "b"], ensemble_formula="released")


def test_pipeline_options_given_at_construction_hold_for_every_call(model, processor, tmp_path):
    from transformers import pipeline

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    images = [random_image(90, 120, seed=2), random_image(70, 50, seed=3)]
    options = dict(preprocessing="released", unlabeled_id=7)
    pipe = pipeline(
        "open-vocabulary-segmentation", model=str(tmp_path), proposal_generator=ImageSizeGenerator(), **options
    )
    expected = segment(images, ["a", "b", "c"], model, processor, ImageSizeGenerator(), **options)
    direct = segment(images, ["a", "b", "c"], model, processor, ImageSizeGenerator())
    for got in (
        pipe(images, candidate_labels=["a", "b", "c"]),
        pipe(images, candidate_labels=["a", "b", "c"], batch_size=2),
    ):
        for one, want, other in zip(got, expected, direct):
            assert torch.equal(one["segmentation"], want["segmentation"])
            torch.testing.assert_close(one["scores"], want["scores"])
    assert not all(torch.allclose(w["scores"], d["scores"]) for w, d in zip(expected, direct))  # options matter
