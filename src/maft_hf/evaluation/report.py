"""Evaluation reports: the `results.json` record of a run ([`build_results_record`]) and Markdown tables
([`format_results_markdown`]): paper Tab. 1 (zero-shot) or Tab. 3 (open-vocabulary) with the paper's rows above ours,
plain scores for other datasets, then the run details."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.benchmarks import BENCHMARKS

RESULTS_VERSION = 1
TABLE3_BENCHMARKS = ("ade20k_847", "ade20k_150", "pascal_context_459", "pascal_context_59", "pascal_voc_20")
TABLE1_METRICS = (("mIoU_seen", "seen mIoU"), ("mIoU_unseen", "unseen mIoU"), ("hIoU", "hIoU"), ("mIoU", "mIoU"))
OTHER_METRICS = (("mIoU", "mIoU"), ("mAcc", "mAcc"), ("pAcc", "pAcc"), ("fwIoU", "fwIoU"))
SCALAR_METRICS = ("mIoU", "fwIoU", "mAcc", "pAcc", "mIoU_seen", "mIoU_unseen", "hIoU")
MISSING = "–"


def json_ready(value: Any) -> Any:
    """`value` with NaN / inf floats as None (valid JSON), tuples and tensors as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist"):
        return json_ready(value.tolist())
    return value


def build_results_record(
    results: Mapping[str, Any],
    *,
    model: str,
    dataset: str,
    split: str | None,
    proposals: str,
    ensemble_weight: float | None,
    class_names: Sequence[str],
    benchmark: str | None = None,
    ignore_index: int | None = 255,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready record of one run (`{"version", "run", "metrics", "per_class", "paper"}`) from the dict of
    `evaluate_segmentation`; `benchmark` adds the paper's numbers, `extra` goes under `"run"`; NaN becomes `null`."""
    run = {
        "model": model,
        "benchmark": benchmark,
        "dataset": dataset,
        "split": split,
        "proposals": proposals,
        "ensemble_weight": ensemble_weight,
        "ensemble_applied": bool(results.get("ensemble_applied", False)),
        "unseen_classes_known_to_generator": list(results.get("unseen_classes_known_to_generator") or []),
        "num_classes": len(class_names),
        "ignore_index": ignore_index,
        "num_processes": results.get("num_processes", 1),
        "images_per_process": results.get("images_per_process"),
        **dict(extra or {}),
    }
    metrics = {name: results[name] for name in SCALAR_METRICS if name in results}
    counts = ("num_images", "num_evaluated_classes", "num_excluded_classes", "excluded_classes", "excluded_class_names")
    metrics.update({key: results.get(key) for key in counts})
    zero_shot = ("unseen_classes", "num_evaluated_seen_classes", "num_evaluated_unseen_classes")
    metrics.update({key: results[key] for key in zero_shot if key in results})
    per_class = {"names": list(class_names)}
    per_class.update(iou=results.get("per_class_iou"), accuracy=results.get("per_class_accuracy"))
    paper = None
    if benchmark is not None:
        spec = BENCHMARKS[benchmark]
        paper = {
            "display_name": spec.display_name,
            "setting": spec.setting,
            "results": dict(spec.paper_results),
            "source": spec.paper_results_source,
            "released_checkpoint_results": dict(spec.released_checkpoint_results),
        }
    record = {"version": RESULTS_VERSION, "run": run, "metrics": metrics, "per_class": per_class, "paper": paper}
    return json_ready(record)


def model_card_results(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """`{benchmark or dataset: {metric: percent}}` of a record for `update_model_card_results` (mIoU, plus seen /
    unseen mIoU and hIoU when zero-shot); undefined scores are left out."""
    run, metrics = record["run"], record["metrics"]
    names = ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU") if "hIoU" in metrics else ("mIoU",)
    values = {n: metrics[n] for n in names if isinstance(metrics.get(n), (int, float))}
    return {run.get("benchmark") or run["dataset"]: values} if values else {}


def _fmt(value) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value:.2f}"


def _paper_fmt(value) -> str:
    """The paper's precision: one decimal, two where the source has two."""
    return MISSING if value is None else f"{value:.2f}".removesuffix("0")


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ours_label(record) -> str:
    run = record["run"]
    weight = run["ensemble_weight"] if run.get("ensemble_applied") else None
    ensemble = f"Eq. 9 ensemble, λ = {weight:g}" if weight else "no ensemble"
    return f"**ours**: `{run['model']}`, proposals `{run['proposals']}`, {ensemble}"


def _dataset_name(run) -> str:
    return BENCHMARKS[run["benchmark"]].display_name if run["benchmark"] else run["dataset"]


def _zero_shot_table(records) -> list[str]:
    header = ["Method", "Dataset"] + [label for _, label in TABLE1_METRICS]
    specs = dict.fromkeys(BENCHMARKS[r["run"]["benchmark"]] for r in records if r["run"]["benchmark"])
    rows = [
        ["FreeSeg + MAFT, ViT-B/16 (paper Tab. 1)", spec.display_name]
        + [_paper_fmt(spec.paper_results.get(key)) for key, _ in TABLE1_METRICS]
        for spec in specs
        if spec.paper_results
    ]
    for record in records:
        values = [_fmt(record["metrics"].get(key)) for key, _ in TABLE1_METRICS]
        rows.append([_ours_label(record), _dataset_name(record["run"])] + values)
    lines = _table("### Zero-shot semantic segmentation (layout of paper Tab. 1; mIoU in %)", header, rows)
    for run in (record["run"] for record in records):
        if leaked := run.get("unseen_classes_known_to_generator"):
            note = f"the proposal generator of `{run['dataset']}` has class scores for the unseen classes"
            lines += ["", f"- Not zero-shot: {note} {', '.join(leaked)}, and the Eq. 9 ensemble used them."]
    return lines


def _open_vocabulary_table(records) -> list[str]:
    specs = [BENCHMARKS[name] for name in TABLE3_BENCHMARKS]
    rows = [
        ["FreeSeg + MAFT, ViT-B/16 (paper Tab. 3)"] + [_paper_fmt(spec.paper_results.get("mIoU")) for spec in specs],
        ["Authors' released ViT-B/16 checkpoint"]
        + [_paper_fmt(spec.released_checkpoint_results.get("mIoU")) for spec in specs],
    ]
    ours: dict[str, dict[str, Any]] = {}  # one row per setting: {benchmark: mIoU}
    for record in records:
        ours.setdefault(_ours_label(record), {})[record["run"]["benchmark"]] = record["metrics"].get("mIoU")
    rows += [[label] + [_fmt(scores.get(name)) for name in TABLE3_BENCHMARKS] for label, scores in ours.items()]
    title = "### Open-vocabulary semantic segmentation, trained on COCO-Stuff (layout of paper Tab. 3; mIoU in %)"
    return _table(title, ["Method"] + [spec.display_name for spec in specs], rows)


def _other_table(records) -> list[str]:
    header = ["Method", "Dataset", "Classes"] + [label for _, label in OTHER_METRICS]
    rows = [
        [_ours_label(r), _dataset_name(r["run"]), str(r["run"]["num_classes"])]
        + [_fmt(r["metrics"].get(key)) for key, _ in OTHER_METRICS]
        for r in records
    ]
    return _table("### Other datasets (the paper reports none; scores in %)", header, rows)


def _details_table(records) -> list[str]:
    header = ["Dataset", "Split", "Images", "Processes", "Classes evaluated", "mIoU", "mAcc", "pAcc", "fwIoU"]
    rows = []
    for record in records:
        run, metrics = record["run"], record["metrics"]
        evaluated = f"{metrics.get('num_evaluated_classes', MISSING)} / {run['num_classes']}"
        rows.append(
            [f"`{run['dataset']}`", str(run.get("split") or MISSING), str(metrics.get("num_images"))]
            + [str(run.get("num_processes")), evaluated]
            + [_fmt(metrics.get(key)) for key in ("mIoU", "mAcc", "pAcc", "fwIoU")]
        )
    return _table("### Run details", header, rows) + [
        "",
        "- Classes absent from both the ground truth and the predictions of the whole set are excluded from the means "
        '(detectron2 convention); "Classes evaluated" counts the others.',
        "- The paper's numbers use FreeSeg's proposals (trained on COCO-Stuff); numbers with other proposals are not "
        "directly comparable. The released inference uses no ensemble (λ = 0).",
    ]


def format_results_markdown(records: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Markdown tables of one or several [`build_results_record`] records, the paper's numbers beside ours."""
    records = [records] if isinstance(records, Mapping) else list(records)
    if not records:
        raise ValueError("No results to format: pass at least one results record.")
    zero_shot = [r for r in records if "hIoU" in r["metrics"]]
    table3 = [r for r in records if "hIoU" not in r["metrics"] and r["run"].get("benchmark") in TABLE3_BENCHMARKS]
    other = [r for r in records if r not in zero_shot and r not in table3]
    lines: list[str] = []
    for group, render in ((zero_shot, _zero_shot_table), (table3, _open_vocabulary_table), (other, _other_table)):
        if group:
            lines += render(group) + [""]
    return "\n".join(lines + _details_table(records)) + "\n"
