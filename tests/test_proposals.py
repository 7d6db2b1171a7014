"""Proposal sources: user masks, grid, universal segmentation (Mask2Former / OneFormer), SAM, and the factory.

Every model is a tiny random one saved to a temporary directory and loaded back by path, offline.
"""

import string

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from maft_hf.proposals import Proposals
from maft_hf.proposals.factory import load_proposal_generator, parse_proposal_spec
from maft_hf.proposals.grid import GridProposals, grid_masks
from maft_hf.proposals.sam import SAMProposals, box_iou, box_nms, masks_to_boxes, point_grid, stability_scores
from maft_hf.proposals.universal import (
    UniversalSegmentationProposals,
    class_probabilities,
    mask_logits_to_probabilities,
)
from maft_hf.proposals.user_masks import UserMaskProposals, proposals_from_user_masks, split_label_map

NUM_LABELS = 5
NUM_QUERIES = 10
IMAGE_HW = (45, 61)  # non-square, odd


def _random_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def pil_image():
    return Image.fromarray(_random_image(*IMAGE_HW))


def _tiny_swin():
    from transformers import SwinConfig

    return SwinConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        image_size=64,
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def _tiny_clip_tokenizer():
    """A character-level CLIP tokenizer (ids < 99), enough for OneFormer's task text."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase:
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


@pytest.fixture(scope="module")
def mask2former_dir(tmp_path_factory):
    from maft_hf.testing import build_tiny_mask2former

    return build_tiny_mask2former(tmp_path_factory.mktemp("mask2former"), NUM_QUERIES, NUM_LABELS)


@pytest.fixture(scope="module")
def mask2former_generator(mask2former_dir):
    return load_proposal_generator(f"mask2former:{mask2former_dir}", local_files_only=True)


@pytest.fixture(scope="module")
def oneformer_dir(tmp_path_factory):
    from transformers import OneFormerConfig, OneFormerForUniversalSegmentation, OneFormerImageProcessor

    torch.manual_seed(0)
    config = OneFormerConfig(
        backbone_config=_tiny_swin(),
        num_queries=NUM_QUERIES,
        num_labels=NUM_LABELS,
        hidden_dim=32,
        conv_dim=32,
        mask_dim=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        text_encoder_width=32,
        text_encoder_num_layers=1,
        text_encoder_vocab_size=99,
        text_encoder_context_length=16,
        text_encoder_n_ctx=4,
        task_seq_len=16,
        max_seq_len=16,
        query_dec_layers=1,
    )
    path = tmp_path_factory.mktemp("oneformer")
    OneFormerForUniversalSegmentation(config).save_pretrained(path)
    OneFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(path)
    _tiny_clip_tokenizer().save_pretrained(path)
    return path


def _tiny_sam():
    from maft_hf.testing import build_tiny_sam

    return build_tiny_sam()


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam")
    _tiny_sam().save_pretrained(path)
    return path


def _interp_align_corners_true(x, size):
    """Reference bilinear upsampling with align_corners=True, from the definition (separable 1-D weights)."""

    def weights(n_in, n_out):
        pos = torch.arange(n_out, dtype=torch.float64) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        low = pos.floor().long().clamp(max=n_in - 1)
        high = (low + 1).clamp(max=n_in - 1)
        frac = pos - low
        matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
        matrix[torch.arange(n_out), low] += 1 - frac
        matrix[torch.arange(n_out), high] += frac
        return matrix

    rows, cols = weights(x.shape[-2], size[0]), weights(x.shape[-1], size[1])
    return torch.einsum("ih,...hw,jw->...ij", rows, x.double(), cols).float()


# ---- user masks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "masks, expected",
    [
        (np.array([[[True, False], [False, True]]]), [[[1.0, 0.0], [0.0, 1.0]]]),
        (torch.tensor([[[1, 0], [0, 1]]], dtype=torch.uint8), [[[1.0, 0.0], [0.0, 1.0]]]),
        (np.array([[[255, 0], [0, 255]]], dtype=np.uint8), [[[1.0, 0.0], [0.0, 1.0]]]),
        (np.array([[[0.25, 0.0], [1.0, 0.5]]], dtype=np.float32), [[[0.25, 0.0], [1.0, 0.5]]]),
        (
            torch.tensor([[[0.5, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64),
            [[[0.5, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]],
        ),
    ],
)
def test_user_masks_stack_formats(masks, expected):
    proposals = proposals_from_user_masks(masks)
    assert isinstance(proposals, Proposals)
    assert proposals.masks.dtype == torch.float32
    torch.testing.assert_close(proposals.masks, torch.tensor(expected))
    assert proposals.class_scores is None


def test_user_masks_list_formats():
    first = Image.fromarray(np.array([[255, 0], [0, 0]], dtype=np.uint8), mode="L")
    second = Image.fromarray(np.array([[False, True], [False, False]]))  # mode "1"
    assert second.mode == "1"
    third = np.array([[0, 0], [1, 0]], dtype=np.uint8)  # 0/1
    fourth = torch.tensor([[0.0, 0.0], [0.0, 0.75]])
    masks = proposals_from_user_masks([first, second, third, fourth]).masks
    expected = torch.zeros(4, 2, 2)
    expected[0, 0, 0] = expected[1, 0, 1] = expected[2, 1, 0] = 1.0
    expected[3, 1, 1] = 0.75
    torch.testing.assert_close(masks, expected)


def test_user_masks_resize_is_bilinear():
    mask = np.zeros((1, 1, 2), dtype=bool)
    mask[0, 0, 1] = True  # [0, 1] -> 4 columns with align_corners=False: [0, 0.25, 0.75, 1]
    masks = proposals_from_user_masks(mask, image_size=(3, 4)).masks
    assert masks.shape == (1, 3, 4)
    torch.testing.assert_close(masks[0], torch.tensor([[0.0, 0.25, 0.75, 1.0]]).expand(3, 4))
    # masks of different sizes in a list are all brought to the image size
    listed = proposals_from_user_masks([np.ones((5, 7), bool), np.zeros((9, 2), np.uint8)], image_size=IMAGE_HW)
    assert listed.masks.shape == (2, *IMAGE_HW)
    torch.testing.assert_close(listed.masks[0], torch.ones(IMAGE_HW))
    torch.testing.assert_close(listed.masks[1], torch.zeros(IMAGE_HW))
    for bad_size in [(0, 4), (4, 4, 3)]:
        with pytest.raises(ValueError, match=r"image_size must be a positive \(H, W\)"):
            proposals_from_user_masks(mask, image_size=bad_size)


def test_label_map_split():
    label_map = np.array([[3, 3, 0], [255, 7, 0]], dtype=np.int64)
    masks, ids = split_label_map(label_map)
    assert ids.tolist() == [0, 3, 7]
    assert masks.dtype == torch.bool
    for mask, label in zip(masks, ids):
        assert torch.equal(mask, torch.from_numpy(label_map == int(label)))
    proposals = proposals_from_user_masks(label_map)
    torch.testing.assert_close(proposals.masks, masks.float())
    # ignore_index option: None keeps 255, another value drops that id instead
    assert proposals_from_user_masks(label_map, ignore_index=None).num_proposals == 4
    assert proposals_from_user_masks(label_map, ignore_index=3).num_proposals == 3
    # a palette PIL image is a label map too; a 2-D bool array is a single mask
    palette = Image.fromarray(label_map.astype(np.uint8), mode="L").convert("P")
    assert proposals_from_user_masks(palette).num_proposals == 3
    assert proposals_from_user_masks(label_map == 3).num_proposals == 1


@pytest.mark.parametrize(
    "masks, message",
    [
        (np.zeros((0, 4, 4), dtype=bool), "N = 0"),
        ([], "N = 0"),
        (np.full((1, 2, 2), np.nan, dtype=np.float32), "NaN"),
        (np.full((1, 2, 2), 1.5, dtype=np.float32), r"\[0, 1\]"),
        (-torch.ones(1, 2, 2), r"\[0, 1\]"),
        (np.full((1, 2, 2), 300, dtype=np.int32), "0..255"),
        (np.zeros(5, dtype=bool), r"Expected masks of shape \(N, H, W\).*shape \(5,\)"),
        (np.zeros((1, 1, 2, 2), dtype=bool), r"\(N, H, W\).*shape \(1, 1, 2, 2\)"),
        (np.zeros((2, 2), dtype=np.float32), "integer label map or a bool mask"),
        (np.full((2, 2), 255, dtype=np.uint8), "no id other than ignore_index=255"),
        ([np.zeros((1, 2, 2, 1))], r"must be \(H, W\)"),
        ([np.zeros((2, 2), bool), np.zeros((3, 3), bool)], "one size"),
        ([Image.new("RGB", (2, 2))], "single-band"),
        ("mask.png", "Expected a numpy array"),
    ],
)
def test_user_masks_errors(masks, message):
    with pytest.raises(ValueError, match=message):
        proposals_from_user_masks(masks)


def test_user_mask_generator_resizes_per_image():
    generator = UserMaskProposals(np.array([[0, 1], [1, 2]]))
    images = [Image.new("RGB", (5, 4)), _random_image(*IMAGE_HW), torch.zeros(3, 7, 3, dtype=torch.uint8)]
    outputs = generator(images)
    assert [tuple(p.masks.shape) for p in outputs] == [(3, 4, 5), (3, *IMAGE_HW), (3, 7, 3)]
    per_call = generator(images[:2], masks=[np.ones((1, 2, 2), bool), np.ones((2, 3, 3), bool)])
    assert [p.num_proposals for p in per_call] == [1, 2]
    with pytest.raises(ValueError, match=r"one mask set per image \(2\), got 1"):
        generator(images[:2], masks=[np.ones((1, 2, 2), bool)])
    with pytest.raises(ValueError, match="No masks"):
        UserMaskProposals()(images)


# ---- grid ----------------------------------------------------------------------------------------------------------


def test_grid_proposals():
    masks = grid_masks(3, 60, 90)
    assert masks.shape == (9, 60, 90)
    assert float(masks.min()) >= 0.0 and float(masks.max()) <= 1.0
    # thresholding at 0.5 recovers the hard blocks: pixel (y, x) belongs to block (y // 20, x // 30)
    rows, cols = torch.meshgrid(torch.arange(60), torch.arange(90), indexing="ij")
    block = (rows // 20) * 3 + cols // 30
    assert torch.equal((masks > 0.5).sum(0), torch.ones(60, 90, dtype=torch.long))
    assert torch.equal((masks > 0.5).float().argmax(0), block)
    # soft: 1 deep inside and along the image border, linear ramp of half a block width across inner borders
    assert float(masks[4, 30, 45]) == 1.0 and float(masks[0, 0, 0]) == 1.0
    torch.testing.assert_close(
        masks[4, 30, 22:38], (0.5 + 2 * 3 * ((torch.arange(22, 38) + 0.5) / 90 - 1 / 3)).clamp(0, 1)
    )
    generator = load_proposal_generator("grid:3")
    assert isinstance(generator, GridProposals)
    assert generator([Image.new("RGB", IMAGE_HW[::-1])])[0].masks.shape == (9, *IMAGE_HW)
    torch.testing.assert_close(grid_masks(1, 5, 7), torch.ones(1, 5, 7))
    with pytest.raises(ValueError, match="k must be >= 1"):
        GridProposals(0)


# ---- universal segmentation ----------------------------------------------------------------------------------------


def test_mask_logits_to_probabilities_reference():
    torch.manual_seed(0)
    logits = torch.randn(70, 6, 8)  # more queries than one upsampling chunk
    padded, valid, output = (24, 32), (20, 27), IMAGE_HW
    upsampled = _interp_align_corners_true(logits, padded)
    cropped = upsampled[:, : valid[0], : valid[1]]
    expected = F.interpolate(cropped[None], size=output, mode="bilinear", align_corners=False)[0].sigmoid()
    actual = mask_logits_to_probabilities(logits, padded, valid, output)
    assert actual.shape == (70, *output)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    # no resize at all when everything has one size: exactly the sigmoid of the logits
    torch.testing.assert_close(mask_logits_to_probabilities(logits, (6, 8), (6, 8), (6, 8)), logits.sigmoid())


def test_class_probabilities():
    logits = torch.randn(7, NUM_LABELS + 1)
    renormalized = class_probabilities(logits)
    torch.testing.assert_close(renormalized.sum(-1), torch.ones(7))
    torch.testing.assert_close(renormalized, logits[:, :-1].softmax(-1))
    maskformer = class_probabilities(logits, renormalize=False)
    torch.testing.assert_close(maskformer.sum(-1), 1 - logits.softmax(-1)[:, -1])


def test_mask2former_proposals_from_path(mask2former_generator, pil_image):
    generator = mask2former_generator
    assert type(generator.image_processor).__name__.startswith("Mask2FormerImageProcessor")
    images = [pil_image, _random_image(70, 33, seed=1), torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)]
    outputs = generator(images)
    assert [tuple(p.masks.shape) for p in outputs] == [
        (NUM_QUERIES, *IMAGE_HW),
        (NUM_QUERIES, 70, 33),
        (NUM_QUERIES, 40, 50),
    ]
    for proposals in outputs:
        assert proposals.masks.dtype == torch.float32
        assert float(proposals.masks.min()) >= 0.0 and float(proposals.masks.max()) <= 1.0
        assert proposals.class_scores.shape == (NUM_QUERIES, NUM_LABELS)
        torch.testing.assert_close(proposals.class_scores.sum(-1), torch.ones(NUM_QUERIES))
        assert proposals.class_names == [f"thing{i}" for i in range(NUM_LABELS)]


def test_mask2former_matches_reference_pipeline(mask2former_generator, pil_image):
    """Generator output == the model run on the processor's inputs + the DESIGN.md post-processing, by hand."""
    generator = mask2former_generator
    inputs = generator.image_processor(images=[pil_image], return_tensors="pt")
    with torch.no_grad():
        outputs = generator.model(**inputs)
    padded = inputs["pixel_values"].shape[-2:]
    logits = _interp_align_corners_true(outputs.masks_queries_logits[0], padded)
    height, width = int(inputs["pixel_mask"][0, :, 0].sum()), int(inputs["pixel_mask"][0, 0].sum())
    logits = F.interpolate(logits[None, :, :height, :width], size=IMAGE_HW, mode="bilinear", align_corners=False)[0]
    proposals = generator([pil_image])[0]
    torch.testing.assert_close(proposals.masks, logits.sigmoid(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(proposals.class_scores, outputs.class_queries_logits[0, :, :-1].softmax(-1))


def test_universal_top_num_proposals(mask2former_dir, mask2former_generator, pil_image):
    full = mask2former_generator([pil_image])[0]
    top = UniversalSegmentationProposals(str(mask2former_dir), num_proposals=3)([pil_image])[0]
    inputs = mask2former_generator.image_processor(images=[pil_image], return_tensors="pt")
    with torch.no_grad():
        class_logits = mask2former_generator.model(**inputs).class_queries_logits[0]
    expected = class_logits.softmax(-1)[:, :-1].amax(-1).topk(3).indices.sort().values
    assert top.masks.shape == (3, *IMAGE_HW)
    torch.testing.assert_close(top.masks, full.masks[expected])
    torch.testing.assert_close(top.class_scores, full.class_scores[expected])
    with pytest.raises(ValueError, match="num_proposals must be >= 1"):
        UniversalSegmentationProposals(str(mask2former_dir), num_proposals=0)


def test_torch_preprocessing_matches_image_processor(mask2former_generator, pil_image):
    generator = mask2former_generator
    image = torch.from_numpy(np.asarray(pil_image).copy()).permute(2, 0, 1)
    by_processor = generator._processor_preprocess([image])
    by_torch = generator._torch_preprocess([image])
    assert by_processor[0].shape == by_torch[0].shape == (1, 3, 64, 96)
    assert torch.equal(by_processor[1], by_torch[1])
    # PIL and torch antialiased bilinear differ by rounding only: at most a few grey levels, normalised
    assert float((by_processor[0] - by_torch[0]).abs().max()) < 0.1
    # without any processor: ImageNet statistics, 800 / 1333 / 32
    bare = UniversalSegmentationProposals(generator.model)
    assert bare.image_processor is None
    assert bare._target_size(*IMAGE_HW) == (800, 1088)
    assert bare._target_size(2000, 500) == (1344, 352)


def test_generate_prepared_matches_reference(mask2former_generator):
    generator = mask2former_generator
    torch.manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    outputs = generator.generate_prepared(images)
    assert [tuple(p.masks.shape) for p in outputs] == [(NUM_QUERIES, 40, 50)] * 2
    mean = torch.tensor(generator.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(generator.image_processor.image_std).view(1, 3, 1, 1)
    pixel_values = torch.zeros(2, 3, 64, 64)  # padded bottom-right to a multiple of 32
    pixel_values[:, :, :40, :50] = (images.float() / 255 - mean) / std
    pixel_mask = torch.zeros(2, 64, 64, dtype=torch.long)
    pixel_mask[:, :40, :50] = 1
    with torch.no_grad():
        logits = generator.model(pixel_values=pixel_values, pixel_mask=pixel_mask).masks_queries_logits
    expected = _interp_align_corners_true(logits, (64, 64))[:, :, :40, :50].sigmoid()
    for index, proposals in enumerate(outputs):
        torch.testing.assert_close(proposals.masks, expected[index], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expects \(3, H, W\) uint8"):
        generator.generate_prepared(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"expects \(3, H, W\) uint8"):
        generator.generate_prepared([np.zeros((3, 8, 8), dtype=np.uint8)])


@pytest.mark.parametrize("source", [SAMProposals, UniversalSegmentationProposals])
def test_generators_refuse_what_is_neither_a_path_nor_a_model(source):
    with pytest.raises(ValueError, match="Expected a checkpoint path, a Hub id or a model, got dict"):
        source({"model": "facebook/sam-vit-base"})


def test_oneformer_proposals(oneformer_dir, pil_image):
    generator = load_proposal_generator(f"oneformer:{oneformer_dir}", local_files_only=True)
    assert generator.is_oneformer and generator.tokenizer is not None
    task = generator._task_inputs(2)
    tokens = _tiny_clip_tokenizer()(["the task is semantic"], padding="max_length", max_length=16, truncation=True)
    expected = torch.tensor(tokens["input_ids"]) * torch.tensor(tokens["attention_mask"])
    assert torch.equal(task, expected.expand(2, -1))
    proposals = generator([pil_image])[0]
    assert proposals.masks.shape == (NUM_QUERIES, *IMAGE_HW)
    assert float(proposals.masks.min()) >= 0.0 and float(proposals.masks.max()) <= 1.0
    assert proposals.class_scores.shape == (NUM_QUERIES, NUM_LABELS)
    torch.testing.assert_close(proposals.class_scores.sum(-1), torch.ones(NUM_QUERIES))
    no_tokenizer = UniversalSegmentationProposals(generator.model, image_processor=generator.image_processor)
    with pytest.raises(ValueError, match="tokenizer"):
        no_tokenizer([pil_image])


# ---- SAM -----------------------------------------------------------------------------------------------------------


def _sam_reference_logits(generator, image, points_per_side):
    """All 3 * n^2 masks of the grid, at the image size, via SamProcessor-style post-processing, and their scores."""
    processor = generator.image_processor
    inputs = processor(images=[image], return_tensors="pt")
    resized = inputs["reshaped_input_sizes"][0].tolist()
    grid = point_grid(points_per_side) * torch.tensor([resized[1], resized[0]])
    with torch.no_grad():
        outputs = generator.model(
            pixel_values=inputs["pixel_values"], input_points=grid[None, :, None, :], multimask_output=True
        )
    logits = processor.post_process_masks(
        [outputs.pred_masks[0]], inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
    )[0]
    return logits.flatten(0, 1), outputs.iou_scores[0].flatten()


def test_sam_from_path(sam_dir, pil_image):
    generator = load_proposal_generator(f"sam:{sam_dir}", points_per_side=4, local_files_only=True)
    assert isinstance(generator, SAMProposals)
    outputs = generator([pil_image, _random_image(30, 20, seed=2)])
    assert outputs[0].masks.shape[1:] == IMAGE_HW and outputs[1].masks.shape[1:] == (30, 20)
    for proposals in outputs:
        assert proposals.num_proposals >= 1
        assert float(proposals.masks.min()) >= 0.0 and float(proposals.masks.max()) <= 1.0
        assert proposals.class_scores is None


def test_sam_without_filters_keeps_every_non_empty_mask(sam_dir, pil_image):
    generator = SAMProposals(
        str(sam_dir),
        points_per_side=3,
        pred_iou_thresh=-float("inf"),
        stability_score_thresh=-1.0,
        nms_iou=1.0,
        points_per_batch=4,
    )
    logits, scores = _sam_reference_logits(generator, pil_image, 3)
    non_empty = (logits > 0).flatten(1).any(-1)
    assert int(non_empty.sum()) > 1
    proposals = generator([pil_image])[0]
    # no suppression at IoU > 1: every non-empty mask, ordered by predicted IoU
    order = scores.argsort(descending=True)
    order = order[non_empty[order]]
    assert proposals.num_proposals == len(order)
    torch.testing.assert_close(proposals.masks, logits[order].sigmoid(), atol=1e-5, rtol=1e-5)
    # the point batch size does not change the result
    generator.points_per_batch = 64
    torch.testing.assert_close(generator([pil_image])[0].masks, proposals.masks)
    generator.max_proposals = 2
    torch.testing.assert_close(generator([pil_image])[0].masks, proposals.masks[:2])
    # with NMS: the survivors of a greedy box NMS written from the definition
    generator.max_proposals, generator.nms_iou = None, 0.5
    boxes = masks_to_boxes(logits[order] > 0)
    kept = order[_reference_nms(boxes, scores[order], 0.5)]
    assert 1 <= len(kept) < len(order)
    torch.testing.assert_close(generator([pil_image])[0].masks, logits[kept].sigmoid(), atol=1e-5, rtol=1e-5)


def test_sam_falls_back_to_best_mask(sam_dir, pil_image):
    generator = SAMProposals(str(sam_dir), points_per_side=3, pred_iou_thresh=1e9)
    logits, scores = _sam_reference_logits(generator, pil_image, 3)
    proposals = generator([pil_image])[0]
    assert proposals.num_proposals == 1
    torch.testing.assert_close(proposals.masks[0], logits[scores.argmax()].sigmoid(), atol=1e-5, rtol=1e-5)


def test_sam_filters_by_stability(sam_dir, pil_image):
    threshold = 0.5
    generator = SAMProposals(
        str(sam_dir), points_per_side=3, pred_iou_thresh=-float("inf"), stability_score_thresh=threshold, nms_iou=1.0
    )
    logits, scores = _sam_reference_logits(generator, pil_image, 3)
    keep = (stability_scores(logits) > threshold) & (logits > 0).flatten(1).any(-1)
    assert 1 < int(keep.sum()) < len(keep)  # the tiny model gives both kinds
    order = scores.argsort(descending=True)
    order = order[keep[order]]
    proposals = generator([pil_image])[0]
    torch.testing.assert_close(proposals.masks, logits[order].sigmoid(), atol=1e-5, rtol=1e-5)


def test_point_grid():
    torch.testing.assert_close(point_grid(2), torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]))
    assert point_grid(16).shape == (256, 2)
    with pytest.raises(ValueError, match="points_per_side must be >= 1"):
        point_grid(0)


def test_stability_and_boxes():
    logits = torch.full((2, 4, 5), -5.0)
    logits[0, 1:3, 1:4] = 5.0  # 6 pixels above +1, same 6 above -1
    logits[0, 3, 1:4] = 0.5  # 3 more above -1 only
    stability = stability_scores(logits)
    assert stability.tolist() == pytest.approx([6 / 9, 0.0])
    boxes = masks_to_boxes(logits > 0)
    assert boxes.tolist() == [[1, 1, 3, 3], [0, 0, 0, 0]]


def _reference_nms(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        x0, y0, x1, y1 = boxes[i].tolist()
        ok = True
        for j in kept:
            a0, b0, a1, b1 = boxes[j].tolist()
            iw, ih = min(x1, a1) - max(x0, a0) + 1, min(y1, b1) - max(y0, b0) + 1
            inter = max(iw, 0) * max(ih, 0)
            union = (x1 - x0 + 1) * (y1 - y0 + 1) + (a1 - a0 + 1) * (b1 - b0 + 1) - inter
            ok &= inter / union <= threshold
        if ok:
            kept.append(i)
    return kept


def test_box_nms_matches_reference():
    torch.manual_seed(0)
    corners = torch.randint(0, 20, (40, 2, 2))
    boxes = torch.cat([corners.amin(1), corners.amax(1)], dim=-1)
    scores = torch.rand(40)
    for threshold in (0.0, 0.3, 0.7, 1.0):
        assert box_nms(boxes, scores, threshold).tolist() == _reference_nms(boxes, scores, threshold)
    torch.testing.assert_close(box_iou(boxes[:1], boxes[:1]), torch.ones(1, 1))


# ---- factory -------------------------------------------------------------------------------------------------------


def test_factory_specs_and_errors(mask2former_dir, oneformer_dir):
    assert parse_proposal_spec("sam:C:\\models\\sam") == ("sam", "C:\\models\\sam")
    universal = load_proposal_generator(f"universal:{oneformer_dir}", local_files_only=True)
    assert isinstance(universal, UniversalSegmentationProposals) and universal.is_oneformer
    with pytest.raises(ValueError, match="asks for a mask2former checkpoint.*'oneformer'"):
        load_proposal_generator(f"mask2former:{oneformer_dir}", local_files_only=True)
    with pytest.raises(ValueError, match="Unknown proposal source 'detr'"):
        load_proposal_generator(f"detr:{mask2former_dir}")
    with pytest.raises(ValueError, match="kind:argument"):
        load_proposal_generator("grid")
    with pytest.raises(ValueError, match="integer k"):
        load_proposal_generator("grid:four")
    with pytest.raises(ValueError, match="names no checkpoint"):
        load_proposal_generator("sam:")


def test_lazy_exports():
    from maft_hf import proposals

    assert proposals.load_proposal_generator is load_proposal_generator
    assert proposals.SAMProposals is SAMProposals
    assert proposals.UniversalSegmentationProposals is UniversalSegmentationProposals
    assert proposals.UserMaskProposals is UserMaskProposals
    with pytest.raises(AttributeError):
        proposals.NotAThing  # noqa: B018


def test_color_cluster_proposals_follow_colour_regions():
    from maft_hf.proposals import ColorClusterProposals

    image = np.zeros((30, 45, 3), dtype=np.uint8)
    image[:, :20] = (220, 30, 30)
    image[:, 20:] = (20, 40, 200)
    (item,) = load_proposal_generator("kmeans:2")([image])
    assert item.masks.shape == (2, 30, 45)
    assert float(item.masks.min()) >= 0 and float(item.masks.max()) <= 1
    torch.testing.assert_close(item.masks.sum(0), torch.ones(30, 45), atol=1e-4, rtol=0)
    hard = item.masks.argmax(0)
    # each colour region falls in one cluster, and the two regions in different clusters (away from the border)
    assert hard[:, :15].unique().numel() == 1 and hard[:, 25:].unique().numel() == 1
    assert hard[0, 0] != hard[0, -1]
    with pytest.raises(ValueError, match="k must be >= 1"):
        ColorClusterProposals(0)
