"""Tests of maft_hf.evaluation.metrics: the confusion matrix, the benchmark scores and the offline `evaluate` metric."""

import json
import math
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from maft_hf.evaluation.metrics import METRIC_PATH, ConfusionMatrix, compute_segmentation_metrics, harmonic_mean


def detectron2_v06_reference(predictions, references, num_classes, ignore_index):
    """mIoU / mAcc / pAcc / fwIoU of detectron2 v0.6 `SemSegEvaluator.evaluate`, written from its equations.

    Its matrix has an extra row / column for the ignore label, indexed [prediction, ground truth]."""
    n = num_classes + 1
    conf = np.zeros((n, n), dtype=np.int64)
    for pred, gt in zip(predictions, references):
        gt = gt.astype(np.int64).copy()
        gt[gt == ignore_index] = num_classes
        conf += np.bincount(n * pred.reshape(-1).astype(np.int64) + gt.reshape(-1), minlength=n * n).reshape(n, n)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(float)
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(float)
    acc_valid = pos_gt > 0
    iou_valid = (pos_gt + pos_pred) > 0
    union = pos_gt + pos_pred - tp
    iou = np.full(num_classes, np.nan)
    iou[acc_valid] = tp[acc_valid] / union[acc_valid]
    acc = np.full(num_classes, np.nan)
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    return {
        "mIoU": 100 * np.sum(iou[acc_valid]) / np.sum(iou_valid),
        "mAcc": 100 * np.sum(acc[acc_valid]) / np.sum(acc_valid),
        "pAcc": 100 * np.sum(tp) / np.sum(pos_gt),
        "fwIoU": 100 * np.sum(iou[acc_valid] * (pos_gt / pos_gt.sum())[acc_valid]),
    }


def hand_example():
    # pairs (gt, pred) counted: (0,0) (0,1) (1,1) (1,2) (2,2); the 255 pixel is skipped.
    labels = torch.tensor([[0, 0, 1], [1, 2, 255]])
    preds = torch.tensor([[0, 1, 1], [2, 2, 0]])
    return preds, labels


def test_confusion_matrix_counts_by_hand():
    preds, labels = hand_example()
    cm = ConfusionMatrix(3).update(preds, labels)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_metrics_by_hand():
    preds, labels = hand_example()
    m = compute_segmentation_metrics(ConfusionMatrix(3).update(preds, labels))
    # IoU: class 0 = 1 / (2 + 1 - 1), class 1 = 1 / (2 + 2 - 1), class 2 = 1 / (1 + 2 - 1)
    assert m["per_class_iou"] == pytest.approx([50.0, 100 / 3, 50.0])
    assert m["mIoU"] == pytest.approx((50 + 100 / 3 + 50) / 3)
    assert m["pAcc"] == pytest.approx(60.0)  # 3 of 5 counted pixels
    assert m["per_class_accuracy"] == pytest.approx([50.0, 50.0, 100.0])
    assert m["mAcc"] == pytest.approx(200 / 3)
    assert m["fwIoU"] == pytest.approx(100 * (0.5 * 2 + (1 / 3) * 2 + 0.5 * 1) / 5)
    assert m["num_excluded_classes"] == 0 and m["excluded_classes"] == []


def test_absent_classes_are_excluded_and_counted():
    labels = np.array([[0, 0], [1, 1]])
    preds = np.array([[0, 2], [1, 1]])  # class 2 predicted but absent from the ground truth, class 3 nowhere
    m = compute_segmentation_metrics(ConfusionMatrix(4).update(preds, labels), class_names=["a", "b", "c", "d"])
    assert m["per_class_iou"][:3] == pytest.approx([50.0, 100.0, 0.0])
    assert math.isnan(m["per_class_iou"][3])
    assert m["mIoU"] == pytest.approx(50.0)  # (50 + 100 + 0) / 3: class 2 counts with IoU 0, class 3 is left out
    assert m["mAcc"] == pytest.approx(75.0)  # accuracy only over classes present in the ground truth
    assert m["num_excluded_classes"] == 1
    assert m["excluded_classes"] == [3] and m["excluded_class_names"] == ["d"]
    assert m["num_evaluated_classes"] == 3


def test_seen_unseen_and_harmonic_mean():
    labels = np.array([[0, 0], [1, 1]])
    preds = np.array([[0, 2], [1, 1]])
    cm = ConfusionMatrix(4).update(preds, labels)
    m = compute_segmentation_metrics(cm, unseen_classes=[1])
    # seen = classes 0 and 2 (3 excluded): (50 + 0) / 2 = 25; unseen = class 1: 100
    assert m["mIoU_seen"] == pytest.approx(25.0)
    assert m["mIoU_unseen"] == pytest.approx(100.0)
    assert m["hIoU"] == pytest.approx(2 * 25 * 100 / 125)
    assert m["num_evaluated_seen_classes"] == 2 and m["num_evaluated_unseen_classes"] == 1
    by_name = compute_segmentation_metrics(cm, class_names=["a", "b", "c", "d"], unseen_classes=["b"])
    assert by_name["hIoU"] == pytest.approx(m["hIoU"]) and by_name["unseen_classes"] == [1]
    # an unseen group with no evaluated class has no mIoU, so no hIoU
    only_absent = compute_segmentation_metrics(cm, unseen_classes=[3])
    assert math.isnan(only_absent["mIoU_unseen"]) and math.isnan(only_absent["hIoU"])
    assert harmonic_mean(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="no class_names"):
        compute_segmentation_metrics(cm, unseen_classes=["b"])
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        compute_segmentation_metrics(cm, unseen_classes=[4])


def test_matches_detectron2_v06_on_random_maps():
    rng = np.random.default_rng(0)
    num_classes, ignore = 12, 255
    preds, refs = [], []
    for _ in range(5):
        ref = rng.integers(0, 9, size=(17, 23))  # classes 9..11 never in the ground truth
        ref[rng.random(ref.shape) < 0.2] = ignore
        pred = np.where(rng.random(ref.shape) < 0.6, ref, rng.integers(0, 10, size=ref.shape))  # 10, 11 never predicted
        pred[pred == ignore] = 0
        preds.append(pred)
        refs.append(ref)
    cm = ConfusionMatrix(num_classes, ignore_index=ignore)
    for pred, ref in zip(preds, refs):
        cm.update(pred, ref)
    ours = cm.compute()
    reference = detectron2_v06_reference(preds, refs, num_classes, ignore)
    for key in ("mIoU", "mAcc", "pAcc", "fwIoU"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9)
    assert ours["excluded_classes"] == [10, 11]


def test_ignore_label_and_16_bit_maps():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.zeros((4, 4), dtype=np.int64), np.full((4, 4), 255, dtype=np.uint8))
    assert int(cm.matrix.sum()) == 0
    assert math.isnan(cm.compute()["mIoU"]) and cm.compute()["num_excluded_classes"] == 3
    # 16-bit benchmark maps: ignore 65535, uint16 arrays; the prediction at ignored pixels is never looked at
    labels = np.array([[0, 65535], [700, 846]], dtype=np.uint16)
    preds = np.array([[0, 999_999], [700, 3]], dtype=np.int64)
    cm16 = ConfusionMatrix(847, ignore_index=65535).update(preds, labels)
    assert int(cm16.matrix.sum()) == 3
    assert int(cm16.matrix[0, 0]) == 1 and int(cm16.matrix[700, 700]) == 1 and int(cm16.matrix[846, 3]) == 1
    with pytest.raises(ValueError, match="ignore_index 2 is a valid class id"):
        ConfusionMatrix(3, ignore_index=2)


def test_batched_update_equals_per_image_updates():
    rng = np.random.default_rng(1)
    preds = torch.from_numpy(rng.integers(0, 5, size=(3, 6, 7)))
    labels = torch.from_numpy(rng.integers(0, 5, size=(3, 6, 7)))
    batched = ConfusionMatrix(5).update(preds, labels)
    single = ConfusionMatrix(5)
    for p, g in zip(preds, labels):
        single.update(p, g)
    assert torch.equal(batched.matrix, single.matrix)
    assert int(batched.matrix.sum()) == 3 * 6 * 7


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"predictions \(2, 2\) and references \(2, 3\)"):
        ConfusionMatrix(3).update(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, H, W\)"):
        ConfusionMatrix(3).update(np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.int64))


def test_unknown_ids_are_named():
    labels = np.array([[0, 7], [9, 255]])
    with pytest.raises(ValueError, match=r"references contain class ids \[7, 9\] outside \[0, 3\)"):
        ConfusionMatrix(3).update(np.zeros((2, 2), dtype=np.int64), labels)
    with pytest.raises(ValueError, match=r"predictions contain class ids \[-1, 5\]"):
        ConfusionMatrix(3).update(np.array([[-1, 5], [0, 1]]), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="integer class ids"):
        ConfusionMatrix(3).update(np.zeros((2, 2), dtype=np.float32), np.zeros((2, 2), dtype=np.int64))


def test_merge_add_and_sum():
    preds, labels = hand_example()
    first = ConfusionMatrix(3).update(preds, labels)
    second = ConfusionMatrix(3).update(labels.clamp(max=2), labels)
    both = ConfusionMatrix(3).update(torch.stack([preds, labels.clamp(max=2)]), torch.stack([labels, labels]))
    assert torch.equal(first.merge(second).matrix, both.matrix)
    assert torch.equal((first + second).matrix, both.matrix)
    assert torch.equal(sum([first, second]).matrix, both.matrix)
    assert first.matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]  # merge does not modify its operands
    first += second
    assert torch.equal(first.matrix, both.matrix)
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(ConfusionMatrix(3, ignore_index=65535))


def test_reduce_single_process_accelerator():
    from accelerate import Accelerator

    preds, labels = hand_example()
    cm = ConfusionMatrix(3).update(preds, labels)
    reduced = cm.reduce(Accelerator(cpu=True))
    assert torch.equal(reduced.matrix, cm.matrix) and reduced is not cm
    reduced.matrix += 1
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]


REDUCE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from accelerate import Accelerator
    from maft_hf.evaluation.metrics import ConfusionMatrix

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    cm = ConfusionMatrix(3)
    cm.update(torch.full((2, 2), rank), torch.full((2, 2), rank + 1))  # rank 0: gt 1 / pred 0, rank 1: gt 2 / pred 1
    total = cm.reduce(accelerator)
    if accelerator.is_main_process:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": accelerator.num_processes, "matrix": total.matrix.tolist()}, f)
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()  # a clean gloo shutdown (otherwise a rank may abort at exit)
    """
)


@pytest.mark.slow
def test_reduce_sums_two_processes(tmp_path):
    script = tmp_path / "reduce.py"
    script.write_text(REDUCE_SCRIPT)
    out = tmp_path / "out.json"
    with socket.socket() as sock:  # a free port for the rendezvous (port 0 is not accepted by torchrun)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(port), str(script), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["world"] == 2
    assert data["matrix"] == [[0, 0, 0], [4, 0, 0], [0, 4, 0]]


def test_from_matrix_checks():
    assert compute_segmentation_metrics(np.array([[2, 0], [0, 2]]))["mIoU"] == 100.0
    with pytest.raises(ValueError, match="square"):
        compute_segmentation_metrics(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="2 class names"):
        compute_segmentation_metrics(np.eye(3, dtype=np.int64), class_names=["a", "b"])


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import evaluate
    from maft_hf.evaluation.metrics import load_metric, METRIC_PATH

    by_folder = evaluate.load(str(METRIC_PATH))
    by_file = evaluate.load(str(METRIC_PATH / "mean_iou_maft.py"))
    helper = load_metric()
    preds = [np.array([[0, 2], [1, 1]]), np.array([[1, 1, 0]])]
    refs = [np.array([[0, 0], [1, 1]]), np.array([[1, 255, 0]])]
    results = {}
    for key, metric in (("folder", by_folder), ("file", by_file)):
        results[key] = metric.compute(predictions=preds, references=refs, num_labels=4, ignore_index=255,
                                      unseen_classes=[1])
    for p, r in zip(preds, refs):
        helper.add(predictions=p, references=r)
    results["helper"] = helper.compute(num_labels=4, ignore_index=255, unseen_classes=[1])
    results["class"] = type(helper).__name__
    print("RESULT" + json.dumps(results))
    """
)


@pytest.mark.slow
def test_evaluate_metric_loads_offline(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        # any attempt to reach the network fails at once
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    script = tmp_path / "offline.py"
    script.write_text(OFFLINE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    assert results["class"] == "MeanIoUMAFT"
    cm = ConfusionMatrix(4)
    cm.update(np.array([[0, 2], [1, 1]]), np.array([[0, 0], [1, 1]]))
    cm.update(np.array([[1, 1, 0]]), np.array([[1, 255, 0]]))
    expected = compute_segmentation_metrics(cm, unseen_classes=[1])
    for key in ("folder", "file", "helper"):
        for name in ("mIoU", "pAcc", "mAcc", "mIoU_seen", "mIoU_unseen", "hIoU", "num_excluded_classes"):
            assert results[key][name] == pytest.approx(expected[name]), (key, name)
    assert results["folder"]["excluded_classes"] == [3]
    assert METRIC_PATH.joinpath("mean_iou_maft.py").is_file()


def test_progress_file_round_trip_and_refusals(tmp_path):
    from maft_hf.evaluation.progress import ProgressFile

    key = {"model": "m", "ignore_index": 255}
    first = ProgressFile(tmp_path, 0, 1, key, save_every=2)
    assert first.load() is None  # nothing saved: start from the first image
    matrix = torch.tensor([[3, 1], [0, 2]])
    assert not first.save(matrix, 1) and first.save(matrix, 2)  # saves when a multiple of save_every is crossed
    assert not first.save(matrix, 3) and first.save(matrix, 3, {"with_scores": 1}, force=True)
    loaded = ProgressFile(tmp_path, 0, 1, key, save_every=2).load()
    assert loaded["count"] == 3 and loaded["extra"] == {"with_scores": 1}
    np.testing.assert_array_equal(loaded["matrix"], matrix.numpy())
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed
    with pytest.raises(ValueError, match="belongs to another run \\(model: saved 'm', now 'other'\\)"):
        ProgressFile(tmp_path, 0, 1, {**key, "model": "other"}, save_every=2).load()
    with pytest.raises(ValueError, match=r"Cannot resume with 2 process\(es\).*\['process-0-of-1.npz'\]"):
        ProgressFile(tmp_path, 1, 2, key, save_every=2).load()
    (tmp_path / "process-0-of-1.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="Cannot read the saved progress"):
        ProgressFile(tmp_path, 0, 1, key, save_every=2).load()
