"""Hub model cards of MAFT checkpoints, rendered from `maft_hf/assets/model_card_template.md`.

Results are percentages per benchmark, e.g. `{"ade20k_150": {"mIoU": 29.3}}` (a bare number means mIoU); only measured
ones enter the `model-index` and the "this checkpoint" column, the paper's columns come from `BENCHMARKS`."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.benchmarks import BENCHMARKS
from ..model.configuration_maft import MAFTConfig
from ..model.hub_maft import CUSTOM_PIPELINES
from .conversion import PRESETS, preset_name

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "assets" / "model_card_template.md"
(PIPELINE_TAG,) = CUSTOM_PIPELINES
NOT_MEASURED = "not yet measured"
NOT_REPORTED = "—"
TAGS = ["maft", "open-vocabulary-segmentation", "zero-shot-segmentation", "clip"]
BASE_MODELS = {
    "vit-b16": "openai/clip-vit-base-patch16",
    "vit-l14": "openai/clip-vit-large-patch14",
    "vit-b32": "openai/clip-vit-base-patch32",
}
SETTINGS = ("open_vocabulary", "zero_shot")

CITATION = """@inproceedings{jiao2023learning,
  title     = {Learning Mask-aware {CLIP} Representations for Zero-Shot Segmentation},
  author    = {Jiao, Siyu and Wei, Yunchao and Wang, Yaowei and Zhao, Yao and Shi, Humphrey},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {36},
  year      = {2023}
}"""

# pattern: matches a CLIP model id (tried in this order); paper_row: the row of `other_paper_results` (absent:
# `paper_results`); paper_header: the paper's column (absent: none); released: the authors' README has its numbers.
BACKBONES = {
    "vit-l14": {
        "name": "CLIP ViT-L/14",
        "pattern": r"(large|vit-l)-?(patch)?-?14",
        "paper_row": "FreeSeg + MAFT, CLIP ViT-L/14 (Tab. 6)",
        "paper_header": "Paper (FreeSeg + MAFT, ViT-L/14, Tab. 6)",
        "source": (
            "the released code, as run: the paper (Tab. 6) states neither, but the release builds ViT-L/14 IP-CLIP with "
            "mask attention from layer 8 (its start-layer setting lands in another argument) on a 480 x 480 input, "
            "of which the 14 px patches read a 34 x 34 grid (the top-left 476 px)"
        ),
    },
    "vit-b16": {
        "name": "CLIP ViT-B/16",
        "pattern": r"(base|vit-b)-?(patch)?-?16",
        "paper_header": "Paper (FreeSeg + MAFT, ViT-B/16)",
        "released": True,
        "source": "paper section 5.1 (480 x 480 CLIP input) and Tab. 4e (mask attention from layer 8)",
    },
    "vit-b32": {
        "name": "CLIP ViT-B/32",
        "pattern": r"(base|vit-b)-?(patch)?-?32",
        "source": "our choice: the ViT-B/16 settings (480 px, layer 8); the paper has no ViT-B/32 model",
    },
}

METRICS = {  # canonical name -> label in tables and `metric_name` of the model-index
    "mIoU": "mIoU",
    "mIoU_seen": "mIoU (seen classes)",
    "mIoU_unseen": "mIoU (unseen classes)",
    "hIoU": "hIoU (harmonic mean of seen and unseen mIoU)",
    "mAcc": "mean accuracy",
    "pAcc": "pixel accuracy",
    "fwIoU": "frequency-weighted IoU",
}
_ALIASES = "mean_iou:mIoU miou_seen:mIoU_seen miou_unseen:mIoU_unseen unseen_miou:mIoU_unseen seen_miou:mIoU_seen"
_ALIASES += " mean_accuracy:mAcc overall_accuracy:pAcc pixel_accuracy:pAcc"
_METRIC_ALIASES = {name.lower(): name for name in METRICS} | dict(pair.split(":") for pair in _ALIASES.split())

_TAB3 = ("ade20k_847", "ade20k_150", "pascal_context_459", "pascal_context_59", "pascal_voc_20")
ROWS = {  # (benchmark, metric) rows of the evaluation table, per setting
    "open_vocabulary": [(key, "mIoU") for key in _TAB3],
    "zero_shot": [("coco_stuff_zero_shot", metric) for metric in ("mIoU_seen", "mIoU_unseen", "hIoU")],
}

# The released training recipe (DESIGN.md section 2: read from the authors' code): key -> (table label, value).
_RECIPE = {
    "dataset": ("Training data", "COCO-Stuff train2017, 171 classes (open-vocabulary setting)"),
    "proposal_generator": ("Proposals", "FreeSeg's (frozen)"),
    "max_train_steps": ("Iterations", 1000),
    "total_batch_size": ("Batch size (total)", 16),
    "optimizer": ("Optimizer", "AdamW"),
    "learning_rate": ("Learning rate", 1e-5),
    "weight_decay": ("Weight decay", "1e-4 (0 on norms; the paper says 1e-5)"),
    "lr_scheduler": ("Schedule", "poly"),
    "max_grad_norm": ("Gradient clipping (norm)", 0.01),
    "input_image_size": ("Input size (px)", "480 (crops padded to 640 with value 128, then resized)"),
    "mask_aware_loss_weight": ("Mask-aware loss weight", 1.0),
    "distillation_weight": ("Self-distillation weight", "0.1 (the paper says 1)"),
    "trained_parameters": (
        "Trained parameters",
        "attention q/k/v/out and layer_norm1/2 of every block, post layer norm",
    ),
    "precision": ("Precision", "fp32"),
}
RELEASED_RECIPE = {key: value for key, (_, value) in _RECIPE.items()}
TRAINING_LABELS = {key: label for key, (label, _) in _RECIPE.items()} | {"seed": "Seed"}
_ZERO_SHOT_DATASET = "COCO-Stuff train2017, 156 seen classes (15 unseen classes ignored)"

_RESULTS_START = re.compile(r"<!-- maft-results (\{.*?\}) -->\n")
_RESULTS_END = "<!-- /maft-results -->"


def _benchmark_key(name: str) -> str:
    """The `BENCHMARKS` key of a key or display name (`"A-150"` -> `"ade20k_150"`); other names are kept."""
    names = {k: k for k in BENCHMARKS}
    names.update({n.lower(): k for k, spec in BENCHMARKS.items() for n in (spec.display_name, k.replace("_", "-"))})
    return names.get(name, names.get(name.lower(), name))


def normalize_results(results: Mapping | None) -> dict[str, dict[str, float]]:
    """`{benchmark: {metric: percent}}` with canonical names; a bare number is mIoU, `None` values are dropped.
    `ValueError` for unknown metrics and values that are not finite numbers in [0, 100]."""
    out: dict[str, dict[str, float]] = {}
    for benchmark, metrics in (results or {}).items():
        if metrics is not None and not isinstance(metrics, Mapping):
            metrics = {"mIoU": metrics}
        for metric, value in (metrics or {}).items():
            if value is None:
                continue
            canonical = _METRIC_ALIASES.get(str(metric).lower())
            if canonical is None:
                raise ValueError(
                    f"Unknown metric {metric!r} for {benchmark!r}; expected one of {sorted(METRICS)} (or "
                    f"{sorted(set(_METRIC_ALIASES) - {m.lower() for m in METRICS})})."
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{benchmark} {metric} must be a finite number (percent), got {value!r}.")
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{benchmark} {metric} must be a percentage in [0, 100], got {value}.")
            out.setdefault(_benchmark_key(str(benchmark)), {})[canonical] = float(value)
    return out


def infer_backbone(base_model: str | None = None, config=None) -> str | None:
    """`"vit-b16"`, `"vit-l14"` or `"vit-b32"` from a config (patch size and depth) or a CLIP model id; else None."""
    if config is not None:
        return preset_name(getattr(config, "vision_config", config))
    text = (base_model or "").lower().replace("_", "-")
    return next((name for name, info in BACKBONES.items() if re.search(info["pattern"], text)), None)


def paper_columns(backbone: str | None) -> list[tuple[str, dict[str, dict[str, float]]]]:
    """The reference columns of the results table for a backbone: `[(header, {benchmark: {metric: value}})]`."""
    info = BACKBONES.get(backbone or "", {})
    if "paper_header" not in info:
        return []
    row = info.get("paper_row")
    paper = {k: spec.other_paper_results.get(row, {}) if row else spec.paper_results for k, spec in BENCHMARKS.items()}
    columns = [(info["paper_header"], paper)]
    if info.get("released"):
        columns.append(
            ("Authors' released checkpoint", {k: s.released_checkpoint_results for k, s in BENCHMARKS.items()})
        )
    return [(header, {k: dict(v) for k, v in values.items() if v}) for header, values in columns]


def _fmt(value) -> str:
    """Numbers as a paper prints them: 32.0, 10.25, 1e-5; everything else as `str`."""
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:g}".replace("e-0", "e-")
        return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"
    return str(value)


def _metric_label(metric: str) -> str:
    return METRICS[metric].split(" (")[0] + {"mIoU_seen": " (seen)", "mIoU_unseen": " (unseen)"}.get(metric, "")


def _table_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def render_results_section(
    results: Mapping | None, backbone: str | None, setting: str = "open_vocabulary", evaluation_proposals=None
) -> str:
    """The results table: one row per (benchmark, metric), this checkpoint's column and the paper's columns."""
    measured = normalize_results(results)
    rows = list(ROWS[setting])
    rows += [(key, metric) for key, metrics in measured.items() for metric in metrics if (key, metric) not in rows]
    columns = paper_columns(backbone)
    header = ["Benchmark", "Classes", "Metric", "This checkpoint"] + [name for name, _ in columns]
    lines = [_table_row(header), "|" + "---|" * len(header)]
    for key, metric in rows:
        spec = BENCHMARKS.get(key)
        ours = measured.get(key, {}).get(metric)
        name = f"{spec.display_name} (`{key}`)" if spec else f"`{key}`"
        cells = [name, str(spec.num_classes) if spec else NOT_REPORTED, _metric_label(metric)]
        cells.append(NOT_MEASURED if ours is None else f"**{ours:.2f}**")
        cells += [_fmt(values.get(key, {}).get(metric, NOT_REPORTED)) for _, values in columns]
        lines.append(_table_row(cells))
    evaluated_on = (
        "the 5 open-vocabulary benchmarks of paper Tab. 3 (the model is trained on COCO-Stuff only)."
        if setting == "open_vocabulary"
        else "COCO-Stuff with 156 seen / 15 unseen classes (paper Tab. 1)."
    )
    notes = [
        f"mIoU in percent on the validation split of each benchmark: {evaluated_on}",
        '"not yet measured": no evaluation run of this checkpoint exists yet (numbers are never copied from the '
        f"paper); {NOT_REPORTED}: the paper reports no number.",
        "Proposals behind the numbers: this checkpoint's column, "
        + (f"`{evaluation_proposals}`" if evaluation_proposals else "none yet (no run)")
        + "; the paper's and the authors' released checkpoint's columns, FreeSeg's proposal generator (frozen, "
        "trained on COCO-Stuff). Numbers with other proposals are not directly comparable.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def render_training_section(
    training: Mapping | None, setting: str = "open_vocabulary", backbone: str | None = "vit-b16", input_image_size=None
) -> str:
    """The training table: the released (ViT-B/16) recipe beside the hyper-parameters of this checkpoint's run."""
    recipe = dict(RELEASED_RECIPE)
    if setting == "zero_shot":
        recipe["dataset"] = _ZERO_SHOT_DATASET
    other_backbone = backbone != "vit-b16"
    if other_backbone and input_image_size is not None and input_image_size != 480:
        recipe["input_image_size"] = f"{input_image_size} (our choice; the release uses 480 with ViT-B/16)"
    run = dict(training or {})
    intro = (
        "Mask-aware fine-tuning of the image encoder only (paper section 4.2; `scripts/finetune.py`): mask-aware loss "
        "(SmoothL1 between each proposal's class score and its min-max normalised IoU with the ground-truth class "
        "mask) plus self-distillation towards the frozen original CLIP on the whole image."
    )
    if other_backbone:
        name = BACKBONES.get(backbone or "", {}).get("name", "this backbone")
        intro += (
            f" The released recipe is that of ViT-B/16; the paper gives none for {name}, so the same hyper-parameters "
            "are used."
        )
    lines = [intro, "", "| Hyper-parameter | Released recipe | This checkpoint |", "|---|---|---|"]
    for key in list(recipe) + [k for k in run if k not in recipe]:
        ours = _fmt(run[key]) if key in run else ("not yet trained" if not run else NOT_REPORTED)
        lines.append(_table_row([TRAINING_LABELS.get(key, key), _fmt(recipe.get(key, NOT_REPORTED)), ours]))
    if not run:
        lines += [
            "",
            "This checkpoint has no recorded fine-tuning run yet: the right column is filled in by "
            "`scripts/finetune.py` when it writes the card.",
        ]
    return "\n".join(lines)


def render_compute_section(compute: str | Mapping | None) -> str:
    if compute is None:
        return f"Hardware and training / evaluation time: {NOT_MEASURED}."
    if isinstance(compute, str):
        return compute
    return "\n".join(f"- {key.replace('_', ' ').capitalize()}: {_fmt(value)}" for key, value in compute.items())


def eval_results_from(results: Mapping | None) -> list[EvalResult]:
    """The `model-index` entries of measured results."""
    out = []
    for key, metrics in normalize_results(results).items():
        spec = BENCHMARKS.get(key)
        setting = "Zero-shot" if spec is not None and spec.setting == "zero_shot" else "Open-vocabulary"
        common = dict(task_type="image-segmentation", task_name=f"{setting} semantic segmentation", dataset_type=key)
        common.update(dataset_name=spec.display_name if spec else key, dataset_split="validation")
        out += [
            EvalResult(**common, metric_type=metric, metric_name=_metric_label(metric), metric_value=round(value, 4))
            for metric, value in metrics.items()
        ]
    return out


def results_from_eval_results(eval_results) -> dict[str, dict[str, float]]:
    """Inverse of [`eval_results_from`]: `{benchmark: {metric: value}}` from a card's `eval_results`."""
    out: dict[str, dict[str, float]] = {}
    for result in eval_results or []:
        metric = _METRIC_ALIASES.get(str(result.metric_type).lower(), result.metric_type)
        out.setdefault(result.dataset_type, {})[metric] = float(result.metric_value)
    return out


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Replace every `{{ name }}` of `template`; a name without a value raises `ValueError`."""
    missing = sorted({m for m in re.findall(r"\{\{\s*(\w+)\s*\}\}", template) if m not in values})
    if missing:
        raise ValueError(f"The model card template needs values for {missing}.")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(values[m.group(1)]), template)


def make_model_card(
    model_id: str = "maft-vitb16",
    base_model: str | None = "openai/clip-vit-base-patch16",
    results: Mapping | None = None,
    training: Mapping | None = None,
    datasets: list[str] | None = None,
    compute: str | Mapping | None = None,
    *,
    setting: str = "open_vocabulary",
    backbone: str | None = None,
    config=None,
    input_image_size: int | None = None,
    mask_start_layer: int | None = None,
    num_parameters: int | None = None,
    evaluation_proposals: str | None = None,
    license: str = "apache-2.0",
    model_name: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a MAFT checkpoint (`card.save("README.md")` writes it). `results`: measured
    percentages, the only ones in the `model-index`; `training`: this run's hyper-parameters (keys of
    `RELEASED_RECIPE`); `backbone` is inferred from `config` or `base_model`; missing ones render as "not yet ..."."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}.")
    backbone = backbone or infer_backbone(base_model, config)
    if backbone is not None and backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)} or None, got {backbone!r}.")
    preset = _model_settings(backbone, config, input_image_size, mask_start_layer, base_model)
    base_name = base_model or "an unrecorded CLIP checkpoint"
    measured = normalize_results(results)
    model_name = model_name or model_id.rstrip("/").split("/")[-1]
    info = BACKBONES.get(backbone or "", {"name": "CLIP", "source": "given explicitly"})
    overridden = input_image_size is not None or mask_start_layer is not None
    if datasets is None:
        datasets = ["coco_stuff_171"] if setting == "open_vocabulary" else ["coco_stuff_zero_shot"]
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        inference=False,  # the Hub's hosted inference runs no checkpoint code, so no widget could work
        tags=list(TAGS),
        datasets=list(datasets) or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results_from(measured) or None,
    )
    values = {
        "card_data": card_data.to_yaml(),
        "model_name": model_name,
        "model_id": model_id,
        "summary": (
            f"A MAFT (mask-aware fine-tuned) {info['name']} that classifies many mask proposals of an image in one "
            f"forward pass, for open-vocabulary semantic segmentation. Fine-tuned from "
            f"[`{base_name}`]({_hub_url(base_model)}) with the recipe of "
            "[Learning Mask-aware CLIP Representations for Zero-Shot Segmentation]"
            "(https://github.com/jiaosiyu1999/MAFT) (NeurIPS 2023), as implemented in `maft_hf`."
        ),
        "base_model": base_name,
        "base_model_url": _hub_url(base_model),
        "backbone_name": info["name"],
        "parameters": f"{num_parameters:,}" if num_parameters else "same as the base CLIP (MAFT adds none)",
        "mask_start_layer": preset["mask_start_layer"],
        "num_layers": preset["num_hidden_layers"],
        "input_image_size": preset["input_image_size"],
        "patch_size": preset["patch_size"],
        "setting_description": (
            "open-vocabulary: fine-tuned on all 171 COCO-Stuff classes, evaluated on other datasets"
            if setting == "open_vocabulary"
            else "zero-shot: fine-tuned on the 156 seen COCO-Stuff classes, evaluated on the 15 unseen ones too"
        ),
        "preset_source": "set explicitly for this checkpoint" if overridden else info["source"],
        "training_section": render_training_section(training, setting, backbone, preset["input_image_size"]),
        "results_section": _results_block(measured, backbone, setting, evaluation_proposals),
        "compute_section": render_compute_section(compute),
        "citation": CITATION,
        "pipeline_tag": PIPELINE_TAG,
    }
    path = Path(TEMPLATE_PATH if template_path is None else template_path)
    if not path.is_file():
        raise ValueError(
            f"Model card template {str(path)!r} not found; pass template_path= (a file with {{{{ name }}}} "
            "placeholders such as maft_hf/assets/model_card_template.md)."
        )
    return ModelCard(render_template(path.read_text(encoding="utf-8"), values))


def model_card_for(model, model_id: str) -> ModelCard:
    """The card of a model as it is (settings and parameter count read from it)."""
    backbone = infer_backbone(config=model.config)
    num_parameters = sum(p.numel() for p in model.parameters())
    return make_model_card(
        model_id, BASE_MODELS.get(backbone), backbone=backbone, config=model.config, num_parameters=num_parameters
    )


def _model_settings(backbone, config, input_image_size, mask_start_layer, base_model) -> dict:
    """Patch size, depth, input size and mask start layer: the preset's, then the config's, then the overrides."""
    keys = ("patch_size", "num_hidden_layers", "input_image_size", "mask_start_layer")
    vision = getattr(config, "vision_config", None)
    from_config = {key: getattr(vision, key) for key in keys} if vision is not None else {}
    settings = {**PRESETS.get(backbone or "", {}), **from_config}
    overrides = {"input_image_size": input_image_size, "mask_start_layer": mask_start_layer}
    settings.update({key: value for key, value in overrides.items() if value is not None})
    for key in keys:
        if key not in settings:
            raise ValueError(
                f"Cannot tell the model's {key} from base_model={base_model!r}: pass backbone= (one of "
                f"{sorted(BACKBONES)}), config=, or input_image_size= and mask_start_layer=."
            )
    return settings


def _hub_url(model_id: str | None) -> str:
    if model_id is None:
        return "https://huggingface.co/openai"
    return f"https://huggingface.co/{model_id}" if re.fullmatch(r"[\w.-]+/[\w.-]+", model_id) else model_id


def _results_block(measured, backbone, setting, evaluation_proposals) -> str:
    options = {"backbone": backbone, "setting": setting, "evaluation_proposals": evaluation_proposals}
    table = render_results_section(measured, backbone, setting, evaluation_proposals)
    return f"<!-- maft-results {json.dumps(options)} -->\n{table}\n{_RESULTS_END}"


def update_model_card_results(
    card_path: str | os.PathLike, results: Mapping, evaluation_proposals: str | None = None
) -> ModelCard:
    """Merge `results` into the card at `card_path` (a README.md or a checkpoint directory), save and return it.
    New values replace old ones per (benchmark, metric); only the `model-index` and the results table change."""
    path = Path(card_path) / "README.md" if Path(card_path).is_dir() else Path(card_path)
    card = ModelCard.load(path)
    match = _RESULTS_START.search(card.text)
    end = card.text.find(_RESULTS_END)
    if match is None or end < match.end():
        raise ValueError(
            f"{path} has no results section generated by maft_hf.hub.model_card (no maft-results markers)."
        )
    options = json.loads(match.group(1))
    merged = results_from_eval_results(card.data.eval_results)
    for key, metrics in normalize_results(results).items():
        merged.setdefault(key, {}).update(metrics)
    proposals = evaluation_proposals or options.get("evaluation_proposals")
    block = _results_block(merged, options.get("backbone"), options.get("setting", "open_vocabulary"), proposals)
    card.text = card.text[: match.start()] + block + card.text[end + len(_RESULTS_END) :]
    if card.data.model_name is None:
        card.data.model_name = path.parent.name or "maft"
    card.data.eval_results = eval_results_from(merged) or None
    card = ModelCard(str(card))  # re-parse: validates the metadata
    card.save(path)
    return card


def _training_column(values: dict, metrics: dict) -> dict:
    """A fine-tuning run's column of the training table (keys of `RELEASED_RECIPE`)."""
    dataset = values.get("dataset_name") or values.get("dataset_path")
    vocabulary = list(values.get("training_vocabulary") or [])
    proposals = values.get("proposal_generator") or f"precomputed column {values.get('proposal_column')!r}"
    zero_shot = ", zero-shot: unseen classes ignored" if values.get("zero_shot") else ""
    table = {
        "dataset": f"{dataset} (split {values.get('train_split')}, {len(vocabulary)} classes{zero_shot})",
        "proposal_generator": f"{proposals} (frozen)",
        "total_batch_size": values.get("global_batch_size"),
        "optimizer": "AdamW",
        "weight_decay": f"{values.get('weight_decay')} (0 on norms)",
        "lr_scheduler": f"poly (power {values.get('lr_power')}, {values.get('lr_warmup_steps') or 0} warmup steps)",
        "mask_aware_loss_weight": 1.0,
        "trained_parameters": f"freeze policy {values.get('freeze_policy')!r}",
        "precision": "fp32" if values.get("mixed_precision") in (None, "no") else values.get("mixed_precision"),
    }
    same = ("max_train_steps", "learning_rate", "max_grad_norm", "input_image_size", "distillation_weight", "seed")
    table.update({key: values.get(key) for key in same})  # seed, then crop size: the rows after the recipe's
    table["crop size / short side"] = f"{values.get('crop_size')} / {values.get('short_side')}"
    for key, value in metrics.items():
        name = key if key.startswith(("rank_", "train_")) else f"final {key}"
        table[name] = round(value, 4) if isinstance(value, float) else value
    return {k: v for k, v in table.items() if v is not None}


def write_model_card(output_dir: str | os.PathLike, args, metrics: Mapping | None = None) -> str:
    """Write `output_dir/README.md` for a fine-tuned checkpoint (after its `save_pretrained`); returns its path.
    `args`: the fine-tuning arguments (a Namespace or dict, plus `training_vocabulary` and `global_batch_size`);
    `metrics` (final loss, rank correlations) join the training table."""
    values = dict(vars(args)) if not isinstance(args, Mapping) else dict(args)
    output_dir = os.fspath(output_dir)
    config = None
    if os.path.isfile(os.path.join(output_dir, "config.json")):
        config = MAFTConfig.from_pretrained(output_dir)
        values.setdefault("input_image_size", config.vision_config.input_image_size)
    dataset = values.get("dataset_name")
    card = make_model_card(
        model_id=values.get("hub_model_id") or os.path.basename(os.path.abspath(output_dir)),
        base_model=values.get("model_name_or_path"),
        training=_training_column(values, dict(metrics or {})),
        datasets=[dataset] if dataset and not os.path.isdir(dataset) else [],
        setting="zero_shot" if values.get("zero_shot") else "open_vocabulary",
        config=config,
    )
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path
