"""MAFT losses against references written from paper Eq. 5-8 (as released) with explicit loops."""

import pytest
import torch
import torch.nn.functional as F

from maft_hf.training.losses import (
    PAPER_DISTILLATION_WEIGHT,
    RELEASED_DISTILLATION_WEIGHT,
    class_masks_from_labels,
    maft_loss,
    mask_aware_loss,
    min_max_normalize,
    self_distillation_loss,
    soft_iou,
)

IGNORE = 255


def smooth_l1(x, y):
    d = (x - y).abs()
    return 0.5 * d * d if d < 1 else d - 0.5


def reference_soft_iou(p, g):
    inter = (p * g).sum()
    return inter / (g.sum() + p.sum() - inter + 1e-7)


def reference_mask_aware_loss(logits, proposals, labels, ignore=IGNORE, valid=None):
    """Loops over images, present classes and proposals: Eq. 5 (min-max), 6 and 7 (SmoothL1), mean over entries."""
    entries = []
    batch, num_proposals, _ = logits.shape
    for b in range(batch):
        probs = logits[b].softmax(-1)
        kept = [n for n in range(num_proposals) if valid is None or bool(valid[b, n])]
        classes = sorted(set(labels[b].unique().tolist()) - {ignore})
        for c in classes:
            g = (labels[b] == c).to(proposals.dtype)
            ious = [reference_soft_iou(proposals[b, n].detach(), g) for n in kept]
            low, high = min(ious), max(ious)
            for n, iou in zip(kept, ious):
                target = (iou - low) / (high - low + 1e-8)
                entries.append(smooth_l1(probs[n, c], target))
    return torch.stack(entries).mean()


def random_batch(batch=2, n=6, c=5, h=12, w=10, dtype=torch.float64, ignore_frac=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, n, c, generator=g, dtype=dtype) * 3).requires_grad_(True)
    proposals = torch.rand(batch, n, h, w, generator=g, dtype=dtype)
    labels = torch.randint(0, c, (batch, h, w), generator=g)
    labels[torch.rand(batch, h, w, generator=g) < ignore_frac] = IGNORE
    return logits, proposals, labels


def test_soft_iou_matches_loops_and_hand_value():
    _, proposals, labels = random_batch()
    _, _, masks = class_masks_from_labels(labels, 5)
    iou = soft_iou(proposals, masks)
    assert iou.shape == (2, masks.shape[1], 6)
    for b in range(2):
        for k in range(masks.shape[1]):
            for n in range(6):
                torch.testing.assert_close(iou[b, k, n], reference_soft_iou(proposals[b, n], masks[b, k].double()))
    p = torch.tensor([[[[1.0, 0.5, 0.0]]]])
    g = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    # intersection 1.5, sum(g) 2, sum(p) 1.5 -> 1.5 / 2
    torch.testing.assert_close(soft_iou(p, g), torch.tensor([[[0.75]]]), atol=1e-6, rtol=0)


def test_class_masks_from_labels_padding_and_order():
    labels = torch.tensor([[[3, 0], [IGNORE, 3]], [[1, 1], [1, 1]], [[IGNORE, IGNORE], [IGNORE, IGNORE]]])
    ids, valid, masks = class_masks_from_labels(labels, num_classes=4)
    assert ids.tolist() == [[0, 3], [1, 0], [0, 0]]
    assert valid.tolist() == [[True, True], [True, False], [False, False]]
    assert masks.shape == (3, 2, 2, 2) and masks.dtype == torch.float32
    assert masks[0, 0].tolist() == [[0, 1], [0, 0]]
    assert masks[0, 1].tolist() == [[1, 0], [0, 1]]
    assert masks[1, 0].sum() == 4 and masks[1, 1].sum() == 0 and masks[2].sum() == 0


def test_class_masks_no_labelled_pixel_and_errors():
    ids, valid, masks = class_masks_from_labels(torch.full((2, 3, 3), IGNORE), num_classes=4)
    assert ids.shape == (2, 0) and valid.shape == (2, 0) and masks.shape == (2, 0, 3, 3)
    with pytest.raises(ValueError, match=r"\[7\]"):
        class_masks_from_labels(torch.tensor([[[0, 7]]]), num_classes=4)
    with pytest.raises(ValueError, match="integer"):
        class_masks_from_labels(torch.zeros(1, 2, 2), num_classes=4)


def test_mask_aware_loss_matches_reference_value_and_gradient():
    logits, proposals, labels = random_batch()
    loss = mask_aware_loss(logits, proposals, labels)
    (grad,) = torch.autograd.grad(loss, logits)
    ref = reference_mask_aware_loss(logits, proposals, labels)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, ref_grad)
    assert loss.item() > 0


def test_mask_aware_loss_float32_and_ignore_pixels_count_in_proposal_area():
    logits, proposals, labels = random_batch(dtype=torch.float32, ignore_frac=0.5, seed=3)
    torch.testing.assert_close(
        mask_aware_loss(logits, proposals, labels),
        reference_mask_aware_loss(logits.double(), proposals.double(), labels),
        check_dtype=False,
        rtol=1e-5,
        atol=1e-6,
    )
    # Changing proposals on ignored pixels changes sum(p) of the IoU, hence the loss (as released).
    altered = proposals.clone()
    altered[labels.unsqueeze(1).expand_as(altered) == IGNORE] = 1.0
    assert not torch.allclose(mask_aware_loss(logits, proposals, labels), mask_aware_loss(logits, altered, labels))


def test_target_is_detached():
    logits, proposals, labels = random_batch()
    proposals.requires_grad_(True)
    mask_aware_loss(logits, proposals, labels).backward()
    assert proposals.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_min_max_guard_constant_row_gives_zero_target():
    logits, _, labels = random_batch(batch=1, n=4)
    proposals = torch.full((1, 4, 12, 10), 0.3, dtype=torch.float64)  # every proposal has the same IoU
    loss = mask_aware_loss(logits, proposals, labels)
    assert torch.isfinite(loss)
    ids, valid, _ = class_masks_from_labels(labels, 5)
    probs = logits.softmax(-1)[0][:, ids[0][valid[0]]]  # (N, K): target 0 everywhere
    torch.testing.assert_close(loss, (0.5 * probs**2).mean())
    row = torch.tensor([[0.2, 0.2, 0.2]])
    assert min_max_normalize(row).tolist() == [[0.0, 0.0, 0.0]]
    torch.testing.assert_close(min_max_normalize(torch.tensor([[1.0, 3.0, 2.0]])), torch.tensor([[0.0, 1.0, 0.5]]))


def test_ignore_only_image_contributes_nothing_and_batch_of_one():
    logits, proposals, labels = random_batch()
    labels[1] = IGNORE
    both = mask_aware_loss(logits, proposals, labels)
    first = mask_aware_loss(logits[:1], proposals[:1], labels[:1])
    torch.testing.assert_close(both, first)
    torch.testing.assert_close(first, reference_mask_aware_loss(logits[:1], proposals[:1], labels[:1]))


def test_no_labelled_class_returns_zero_with_working_backward():
    logits, proposals, labels = random_batch()
    labels.fill_(IGNORE)
    loss = mask_aware_loss(logits, proposals, labels)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_padded_proposals_excluded_from_minmax_and_mean():
    logits, proposals, labels = random_batch(n=6)
    valid = torch.tensor([[True, True, True, False, False, False], [True] * 6])
    loss = mask_aware_loss(logits, proposals, labels, proposal_valid_mask=valid)
    torch.testing.assert_close(loss, reference_mask_aware_loss(logits, proposals, labels, valid=valid))
    # padded entries are irrelevant: make them extreme, the loss does not change
    logits2 = logits.detach().clone()
    logits2[0, 3:] = 50.0
    proposals2 = proposals.clone()
    proposals2[0, 3:] = 1.0
    torch.testing.assert_close(mask_aware_loss(logits2, proposals2, labels, proposal_valid_mask=valid), loss.detach())
    # image 0 with only its 3 real proposals gives the same per-entry terms
    separate = reference_mask_aware_loss(logits[:1, :3], proposals[:1, :3], labels[:1])
    only_first = mask_aware_loss(logits[:1], proposals[:1], labels[:1], proposal_valid_mask=valid[:1])
    torch.testing.assert_close(only_first, separate)


def test_proposals_at_another_resolution_are_resized_bilinearly():
    logits, proposals, labels = random_batch(h=8, w=8)
    small = torch.rand(2, 6, 4, 4, dtype=torch.float64)
    resized = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(mask_aware_loss(logits, small, labels), mask_aware_loss(logits, resized, labels))


def test_mask_aware_loss_shape_errors():
    logits, proposals, labels = random_batch()
    with pytest.raises(ValueError, match="mask_logits"):
        mask_aware_loss(logits[0], proposals, labels)
    with pytest.raises(ValueError, match="agree"):
        mask_aware_loss(logits, proposals[:, :3], labels)
    with pytest.raises(ValueError, match="proposal_valid_mask"):
        mask_aware_loss(logits, proposals, labels, proposal_valid_mask=torch.ones(2, 3, dtype=torch.bool))
    labels[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"\[9\]"):
        mask_aware_loss(logits, proposals, labels)


def test_self_distillation_matches_loops_and_detaches_teacher():
    g = torch.Generator().manual_seed(1)
    student = (torch.randn(3, 7, generator=g) * 5).requires_grad_(True)
    teacher = (torch.randn(3, 7, generator=g) * 5).requires_grad_(True)
    loss = self_distillation_loss(student, teacher)
    s, t = student.softmax(-1), teacher.softmax(-1)
    ref = torch.stack([smooth_l1(s[b, c], t[b, c]) for b in range(3) for c in range(7)]).mean()
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="student_image_logits"):
        self_distillation_loss(student, teacher[:, :3])


def test_maft_loss_total_and_weights():
    logits, proposals, labels = random_batch()
    student, teacher = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    out = maft_loss(logits, proposals, labels, student, teacher)
    assert out.distillation_weight == RELEASED_DISTILLATION_WEIGHT == 0.1
    ma = mask_aware_loss(logits, proposals, labels)
    dis = self_distillation_loss(student, teacher)
    torch.testing.assert_close(out.mask_aware_loss, ma)
    torch.testing.assert_close(out.distillation_loss, dis)
    torch.testing.assert_close(out.loss, ma + 0.1 * dis)
    paper = maft_loss(logits, proposals, labels, student, teacher, distillation_weight=PAPER_DISTILLATION_WEIGHT)
    torch.testing.assert_close(paper.loss, ma + dis)
    no_dis = maft_loss(logits, proposals, labels)
    assert no_dis.distillation_loss is None
    torch.testing.assert_close(no_dis.loss, ma)
    with pytest.raises(ValueError, match="both"):
        maft_loss(logits, proposals, labels, student_image_logits=student)
