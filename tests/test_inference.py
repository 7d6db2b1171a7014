"""Semantic inference (MaskFormer rule), chunking, the Eq. 9 ensemble, name matching and proposal classification."""

import math

import pytest
import torch
import torch.nn.functional as F

from maft_hf import MaskAwareCLIPModel
from maft_hf.inference.semantic_map import (
    classify_proposals,
    ensemble_class_scores,
    match_generator_scores,
    normalize_class_name,
    semantic_map,
    semantic_scores,
)
from maft_hf.testing import tiny_maft_config

# 3 proposals, 2 classes, 2x2 pixels. A[n, c] (rows sum to 1) and M[n, h, w]:
PROBS = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
MASKS = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 0.0]],
        [[0.0, 1.0], [0.0, 0.5]],
        [[0.5, 0.5], [0.0, 0.0]],
    ]
)
# S[c, h, w] = sum_n A[n, c] M[n, h, w], by hand:
#   (0,0): c0 = 0.9*1 + 0.5*0.5 = 1.15   c1 = 0.1*1 + 0.5*0.5 = 0.35
#   (0,1): c0 = 0.2*1 + 0.5*0.5 = 0.45   c1 = 0.8*1 + 0.5*0.5 = 1.05
#   (1,0): no proposal covers it: 0, 0 (tie -> class 0)
#   (1,1): c0 = 0.2*0.5 = 0.10           c1 = 0.8*0.5 = 0.40
EXPECTED_SCORES = torch.tensor([[[1.15, 0.45], [0.0, 0.10]], [[0.35, 1.05], [0.0, 0.40]]])
EXPECTED_MAP = torch.tensor([[0, 1], [0, 1]])


def test_hand_example_from_probabilities():
    scores = semantic_scores(PROBS, MASKS, from_logits=False)
    torch.testing.assert_close(scores, EXPECTED_SCORES)
    assert torch.equal(semantic_map(PROBS, MASKS, from_logits=False), EXPECTED_MAP)


def test_hand_example_from_logits():
    logits = PROBS.log() + 3.0  # softmax(log p + const) = p
    torch.testing.assert_close(semantic_scores(logits, MASKS), EXPECTED_SCORES)
    result = semantic_map(logits, MASKS)
    assert result.dtype == torch.long and torch.equal(result, EXPECTED_MAP)


def test_bool_and_half_masks():
    binary = torch.rand(5, 6, 7) > 0.5
    logits = torch.randn(5, 4)
    expected = torch.einsum("nc,nhw->chw", logits.softmax(-1), binary.float())
    torch.testing.assert_close(semantic_scores(logits, binary), expected)
    torch.testing.assert_close(semantic_scores(logits, binary.half()), expected)
    assert torch.equal(semantic_map(logits, binary, chunk_classes=3, chunk_pixels=5), expected.argmax(0))


@pytest.mark.parametrize(
    "chunks",
    [
        dict(),
        dict(chunk_classes=1),
        dict(chunk_classes=7),
        dict(chunk_classes=50),
        dict(chunk_classes=3, chunk_pixels=17),
    ],
)
def test_chunked_equals_unchunked(chunks):
    logits, masks = 4 * torch.randn(12, 23), torch.rand(12, 19, 21)
    reference = torch.einsum("nc,nhw->chw", logits.softmax(-1), masks)
    score_chunks = {k: v for k, v in chunks.items() if k != "chunk_pixels"}
    torch.testing.assert_close(semantic_scores(logits, masks, **score_chunks), reference, atol=1e-6, rtol=1e-5)
    assert torch.equal(semantic_map(logits, masks, **chunks), reference.argmax(0))


def test_ties_go_to_the_lowest_class_across_chunks():
    probs = torch.tensor([[0.2, 0.4, 0.4], [0.1, 0.45, 0.45]])
    masks = torch.rand(2, 3, 4)
    for chunk in (1, 2, 3):
        assert torch.equal(semantic_map(probs, masks, from_logits=False, chunk_classes=chunk), torch.ones(3, 4).long())


def test_semantic_map_does_not_build_the_full_scores():
    # 64 classes but chunks of 8 classes x 16 pixels: the largest float buffer holds 128 values.
    logits, masks = torch.randn(10, 64), torch.rand(10, 32, 32)
    reference = torch.einsum("nc,nhw->chw", logits.softmax(-1), masks).argmax(0)
    assert torch.equal(semantic_map(logits, masks, chunk_classes=8, chunk_pixels=16), reference)


def test_input_errors():
    with pytest.raises(ValueError, match=r"same N >= 1.*\(0, 3\)"):
        semantic_scores(torch.zeros(0, 3), torch.zeros(0, 4, 4))
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(4, 8, 8\)"):
        semantic_map(torch.zeros(5, 3), torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, H, W\).*\(1, 4, 8, 8\)"):
        semantic_scores(torch.zeros(4, 3), torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"C >= 1.*\(4, 0\)"):
        semantic_map(torch.zeros(4, 0), torch.zeros(4, 8, 8))


def bilinear_reference(scores: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]


def agree_where_decided(result, scores, margin=1e-4):
    """`result` equals `scores.argmax(0)` wherever the best class leads the second by more than `margin` (float
    rounding may flip near-ties only), and nearly everywhere."""
    top2 = scores.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > margin
    assert torch.equal(result[decided], scores.argmax(0)[decided])
    assert decided.float().mean() > 0.99


@pytest.mark.parametrize("size", [(45, 61), (7, 9), (128, 96)])
def test_working_resolution_map_equals_the_map_of_resized_masks(size):
    # masks at 16x20 standing for the image: the map equals the one of the masks resized to the image (linear resize)
    logits, masks = 3 * torch.randn(6, 5), torch.rand(6, 16, 20)
    full = bilinear_reference(masks, size)
    reference = torch.einsum("nc,nhw->chw", logits.softmax(-1), full)
    agree_where_decided(semantic_map(logits, masks, output_size=size), reference)


def test_canvas_crop_then_resize():
    # released sem_seg_postprocess: scores on a padded canvas, cropped to the image region, resized to the original
    logits, masks = 3 * torch.randn(5, 4), torch.rand(5, 32, 64)
    masks[:, 27:] = 0
    masks[:, :, 50:] = 0
    scores = torch.einsum("nc,nhw->chw", logits.softmax(-1), masks)[:, :27, :50]
    reference = bilinear_reference(scores, (40, 75))
    result = semantic_map(logits, masks, output_size=(40, 75), valid_size=(27, 50))
    agree_where_decided(result, reference)


@pytest.mark.parametrize("output_size", [None, (24, 30)])
def test_unlabeled_pixels(output_size):
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    masks = torch.zeros(2, 12, 15)
    masks[0, :, :5] = 1.0
    masks[1, :, 5:10] = 0.3  # weight 0.3: below the threshold 0.5
    size = output_size or (12, 15)
    default = semantic_map(probs, masks, from_logits=False, output_size=output_size)
    assert (default == 0).sum() > 0 and default.max() <= 1  # today's rule: uncovered pixels get class 0
    result = semantic_map(probs, masks, from_logits=False, output_size=output_size, unlabeled_id=255)
    total = bilinear_reference(masks, size).sum(0)
    expected = torch.einsum("nc,nhw->chw", probs, bilinear_reference(masks, size)).argmax(0)
    expected[total < 0.5] = 255
    decided = (total - 0.5).abs() > 1e-4
    assert torch.equal(result[decided], expected[decided])
    assert (result == 255).any() and (result == 0).any()
    lowered = semantic_map(
        probs, masks, from_logits=False, output_size=output_size, unlabeled_id=7, unlabeled_threshold=0.2
    )
    assert not (lowered[:, : size[1] * 9 // 15 - 1] == 7).any()  # the 0.3 band now counts as covered


def test_ensemble_equals_eq9_by_hand():
    # class 0 is seen (the generator knows it), class 1 is unseen; lambda = 0.5 makes the powers square roots.
    clip = torch.tensor([[0.25, 0.75], [0.64, 0.36], [0.49, 0.51]])
    generator = torch.tensor([[0.16, 0.9], [0.25, 0.9], [1.0, 0.9]])  # column 1 must be ignored
    seen = torch.tensor([True, False])
    expected = torch.tensor(
        [
            [0.4 * 0.5, math.sqrt(0.75)],  # sqrt(0.16 * 0.25), sqrt(0.75)
            [0.5 * 0.8, 0.6],  # sqrt(0.25 * 0.64), sqrt(0.36)
            [1.0 * 0.7, math.sqrt(0.51)],  # sqrt(1.0 * 0.49), sqrt(0.51)
        ]
    )
    torch.testing.assert_close(ensemble_class_scores(clip, generator, seen, weight=0.5), expected)


def test_ensemble_exponents_follow_the_paper():
    # Eq. 9: seen -> A_p^lambda * A_c^(1 - lambda); unseen -> A_c^lambda.
    clip, generator = torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]])
    result = ensemble_class_scores(clip, generator, [True, False], weight=0.7)
    torch.testing.assert_close(result, torch.tensor([[0.5**0.3, 0.5**0.7]]))


def test_ensemble_without_generator_is_identity():
    clip = torch.rand(3, 4)
    for formula in ("paper", "released"):
        assert torch.equal(ensemble_class_scores(clip, None, torch.zeros(4, dtype=torch.bool), formula=formula), clip)


def test_match_generator_scores_by_name():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    names = ["Building", "tree", "sky, heaven", "edifice"]
    vocabulary = ["building, edifice", "grass", " SKY ", "big   tree"]
    probs, seen = match_generator_scores(scores, names, vocabulary)
    assert seen.tolist() == [True, False, True, False]
    expected = torch.tensor([[0.4, 0.0, 0.3, 0.0], [0.4, 0.0, 0.2, 0.0]])  # building: max(building, edifice)
    torch.testing.assert_close(probs, expected)
    assert normalize_class_name(" Big   Tree, TREES ,") == {"big tree", "trees"}


@pytest.fixture
def tiny_model():
    return MaskAwareCLIPModel(tiny_maft_config()).eval()


def test_classify_proposals_matches_formula_and_model_forward(tiny_model):
    pixel_values, masks = torch.randn(2, 3, 32, 32), torch.rand(2, 5, 32, 32)
    input_ids = torch.tensor([[0, 5, 6, 1], [0, 7, 8, 1], [0, 9, 10, 1]])
    with torch.no_grad():
        text = tiny_model.get_text_features(input_ids=input_ids).pooler_output
        logits = classify_proposals(tiny_model, pixel_values, masks, text)
        mask_features = tiny_model.get_mask_features(pixel_values, masks).pooler_output
        expected = tiny_model.logit_scale.exp() * F.normalize(mask_features, dim=-1) @ F.normalize(text, dim=-1).t()
        forward = tiny_model(input_ids=input_ids, pixel_values=pixel_values, proposal_masks=masks).logits_per_mask
    assert logits.shape == (2, 5, 3)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(logits, forward, atol=1e-5, rtol=1e-5)


def test_classify_proposals_with_padding(tiny_model):
    pixel_values = torch.randn(1, 3, 32, 32)
    masks = torch.rand(1, 3, 32, 32)
    text = F.normalize(torch.randn(4, 16), dim=-1)
    padded = torch.cat([masks, torch.zeros(1, 2, 32, 32)], dim=1)
    valid = torch.tensor([[True, True, True, False, False]])
    with torch.no_grad():
        alone = classify_proposals(tiny_model, pixel_values, masks, text)
        with_padding = classify_proposals(tiny_model, pixel_values, padded, text, proposal_valid_mask=valid)
    torch.testing.assert_close(with_padding[:, :3], alone, atol=1e-5, rtol=1e-5)


def test_ensemble_weight_zero_means_no_ensemble():
    clip = torch.softmax(torch.randn(4, 3), -1)
    generator = torch.softmax(torch.randn(4, 3), -1)
    assert torch.equal(ensemble_class_scores(clip, generator, [True, False, True], weight=0.0), clip)
    assert torch.equal(ensemble_class_scores(clip, generator, weight=0.0, formula="released"), clip)
