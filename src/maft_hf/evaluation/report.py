"""Evaluation reports: the `results.json` record of a run ([`build_results_record`]) and Markdown tables
([`format_results_markdown`]) in the layout of paper Tab. 1 (zero-shot), Tab. 3 (open-vocabulary) or plain scores
for other datasets, the paper's rows above ours, then a details table."""

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
    return json_ready(
        {"version": RESULTS_VERSION, "run": run, "metrics": metrics, "per_class": per_class, "paper": paper}
    )


def model_card_results(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """`{benchmark or dataset: {metric: percent}}` of a record for `update_model_card_results` (mIoU, plus seen /
    unseen mIoU and hIoU when zero-shot); undefined scores are left out."""
    run, metrics = record["run"], record["metrics"]
    names = ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU") if "hIoU" in metrics else ("mIoU",)
    values = {n: metrics[n] for n in names if isinstance(metrics.get(n), (int, float))}
    return {run.get("benchmark") or run["dataset"]: values} if values else {}


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{value:.{digits}f}"


def _paper_fmt(value) -> str:
    if value is None:
        return MISSING
    text = f"{value:.2f}"
    return text[:-1] if text.endswith("0") else text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _setting(record) -> tuple:
    run = record["run"]
    return run["model"], run["proposals"], run["ensemble_weight"] if run.get("ensemble_applied") else None


def _ours_label(record) -> str:
    model, proposals, weight = _setting(record)
    ensemble = f"Eq. 9 ensemble, λ = {weight:g}" if weight else "no ensemble"
    return f"**ours**: `{model}`, proposals `{proposals}`, {ensemble}"


def _dataset_name(run) -> str:
    return BENCHMARKS[run["benchmark"]].display_name if run["benchmark"] else run["dataset"]


def _zero_shot_table(records) -> list[str]:
    header = ["Method", "Dataset"] + [label for _, label in TABLE1_METRICS]
    rows = []
    for benchmark in dict.fromkeys(r["run"]["benchmark"] for r in records if r["run"]["benchmark"]):
        spec = BENCHMARKS[benchmark]
        if spec.paper_results:
            rows.append(
                ["FreeSeg + MAFT, ViT-B/16 (paper Tab. 1)", spec.display_name]
                + [_paper_fmt(spec.paper_results.get(key)) for key, _ in TABLE1_METRICS]
            )
    for record in records:
        values = [_fmt(record["metrics"].get(key)) for key, _ in TABLE1_METRICS]
        rows.append([_ours_label(record), _dataset_name(record["run"])] + values)
    lines = ["### Zero-shot semantic segmentation (layout of paper Tab. 1; mIoU in %)", ""] + _table(header, rows)
    for record in records:
        if leaked := record["run"].get("unseen_classes_known_to_generator"):
            lines += [
                "",
                f"- Not zero-shot: the proposal generator of `{record['run']['dataset']}` has class scores for the "
                f"unseen classes {', '.join(leaked)}, and the Eq. 9 ensemble used them.",
            ]
    return lines


def _open_vocabulary_table(records) -> list[str]:
    header = ["Method"] + [BENCHMARKS[name].display_name for name in TABLE3_BENCHMARKS]
    rows = [
        ["FreeSeg + MAFT, ViT-B/16 (paper Tab. 3)"]
        + [_paper_fmt(BENCHMARKS[name].paper_results.get("mIoU")) for name in TABLE3_BENCHMARKS],
        ["Authors' released ViT-B/16 checkpoint"]
        + [_paper_fmt(BENCHMARKS[name].released_checkpoint_results.get("mIoU")) for name in TABLE3_BENCHMARKS],
    ]
    by_setting: dict[tuple, dict[str, Any]] = {}
    for record in records:
        by_setting.setdefault(_setting(record), {"label": _ours_label(record), "values": {}})
        by_setting[_setting(record)]["values"][record["run"]["benchmark"]] = record["metrics"].get("mIoU")
    for entry in by_setting.values():
        rows.append([entry["label"]] + [_fmt(entry["values"].get(name)) for name in TABLE3_BENCHMARKS])
    title = "### Open-vocabulary semantic segmentation, trained on COCO-Stuff (layout of paper Tab. 3; mIoU in %)"
    return [title, ""] + _table(header, rows)


def _other_table(records) -> list[str]:
    header = ["Method", "Dataset", "Classes"] + [label for _, label in OTHER_METRICS]
    rows = [
        [_ours_label(r), _dataset_name(r["run"]), str(r["run"]["num_classes"])]
        + [_fmt(r["metrics"].get(key)) for key, _ in OTHER_METRICS]
        for r in records
    ]
    return ["### Other datasets (the paper reports none; scores in %)", ""] + _table(header, rows)


def _details_table(records) -> list[str]:
    header = ["Dataset", "Split", "Images", "Processes", "Classes evaluated", "mIoU", "mAcc", "pAcc", "fwIoU"]
    rows = []
    for record in records:
        run, metrics = record["run"], record["metrics"]
        rows.append(
            [
                f"`{run['dataset']}`",
                str(run.get("split") or MISSING),
                str(metrics.get("num_images")),
                str(run.get("num_processes")),
                f"{metrics.get('num_evaluated_classes', MISSING)} / {run['num_classes']}",
            ]
            + [_fmt(metrics.get(key)) for key in ("mIoU", "mAcc", "pAcc", "fwIoU")]
        )
    notes = [
        "Classes absent from both the ground truth and the predictions of the whole set are excluded from the means "
        '(detectron2 convention); "Classes evaluated" counts the others.',
        "The paper's numbers use FreeSeg's proposals (trained on COCO-Stuff); numbers with other proposals are not "
        "directly comparable. The released inference uses no ensemble (λ = 0).",
    ]
    return ["### Run details", ""] + _table(header, rows) + [""] + [f"- {note}" for note in notes]


def format_results_markdown(records: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Markdown tables of one or several [`build_results_record`] records, the paper's numbers beside ours."""
    records = [records] if isinstance(records, Mapping) else list(records)
    if not records:
        raise ValueError("No results to format: pass at least one results record.")
    zero_shot = [r for r in records if "hIoU" in r["metrics"]]
    table3 = [r for r in records if "hIoU" not in r["metrics"] and r["run"].get("benchmark") in TABLE3_BENCHMARKS]
    grouped = {id(r) for r in zero_shot + table3}
    other = [r for r in records if id(r) not in grouped]
    lines: list[str] = []
    for group, render in ((zero_shot, _zero_shot_table), (table3, _open_vocabulary_table), (other, _other_table)):
        if group:
            lines += render(group) + [""]
    lines += _details_table(records)
    return "\n".join(lines) + "\n"
