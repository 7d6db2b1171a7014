"""Model cards: Hub metadata that validates offline, the results table, updates, the committed cards, the snippet."""

import importlib
import pathlib
import re

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from maft_hf.hub.model_card import NOT_MEASURED, make_model_card, update_model_card_results
from maft_hf.testing import build_tiny_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_model_card.py"
COMMITTED = {
    "maft-vitb16": ("maft-hf/maft-vitb16", "openai/clip-vit-base-patch16"),
    "maft-vitl14": ("maft-hf/maft-vitl14", "openai/clip-vit-large-patch14"),
}


def load_script():
    return importlib.import_module("maft_hf.cli.make_model_card")


def table_rows(card_text: str) -> dict[str, list[str]]:
    """'<benchmark key>/<metric>' -> cells of the evaluation table."""
    section = card_text.split("<!-- maft-results", 1)[1].split("<!-- /maft-results -->", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = re.search(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if key:
            rows[f"{key.group(1)}/{cells[2]}"] = cells
    return rows


def reparse(card: ModelCard) -> dict:
    """Parse the card's text again as the Hub would, and return its metadata as a dict."""
    parsed = ModelCard(str(card))  # raises on invalid YAML / model-index
    data = parsed.data.to_dict()
    ModelCardData(**data)  # the metadata round-trips through the dataclass
    return data


# ---------------------------------------------------------------------------------------------------------------
def test_metadata_validates_and_model_index_parses_back():
    results = {"ade20k_150": {"mIoU": 29.3}, "A-847": 10.04, "pascal_voc_20": {"mean_iou": 90.1}}
    card = make_model_card("org/maft-vitb16", "openai/clip-vit-base-patch16", results, datasets=["coco_stuff_171"])
    data = reparse(card)
    assert data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-segmentation"
    assert data["inference"] is False  # hosted inference runs no checkpoint code
    assert data["tags"] == ["maft", "open-vocabulary-segmentation", "zero-shot-segmentation", "clip"]
    assert data["base_model"] == "openai/clip-vit-base-patch16" and data["datasets"] == ["coco_stuff_171"]
    name, evals = model_index_to_eval_results(data["model-index"])
    assert name == "maft-vitb16"
    got = {(e.dataset_type, e.metric_type): e.metric_value for e in evals}
    assert got == {("ade20k_150", "mIoU"): 29.3, ("ade20k_847", "mIoU"): 10.04, ("pascal_voc_20", "mIoU"): 90.1}
    assert all(e.task_type == "image-segmentation" and e.dataset_split == "validation" for e in evals)
    assert {e.dataset_name for e in evals} == {"A-150", "A-847", "PAS-20"}


def test_results_table_beside_the_paper():
    card = make_model_card("org/maft-vitb16", results={"ade20k_150": {"mIoU": 29.3}})
    rows = table_rows(card.text)
    benchmarks = ("ade20k_847", "ade20k_150", "pascal_context_459", "pascal_context_59", "pascal_voc_20")
    assert set(rows) == {f"{k}/mIoU" for k in benchmarks}
    assert rows["ade20k_150/mIoU"][3:] == ["**29.30**", "29.1", "29.14"]
    assert rows["ade20k_847/mIoU"][3:] == [NOT_MEASURED, "10.1", "10.25"]
    assert rows["pascal_context_59/mIoU"][3:] == [NOT_MEASURED, "53.5", "53.33"]
    assert rows["pascal_voc_20/mIoU"][3:] == [NOT_MEASURED, "90.0", "90.44"]
    assert "Authors' released checkpoint" in card.text and "Paper (FreeSeg + MAFT, ViT-B/16)" in card.text


def test_no_results_means_not_yet_measured_and_no_model_index():
    card = make_model_card("org/maft-vitb16")
    data = reparse(card)
    assert "model-index" not in data
    rows = table_rows(card.text)
    assert len(rows) == 5 and all(cells[3] == NOT_MEASURED for cells in rows.values())
    assert "not yet trained" in card.text and "not yet measured." in card.text  # training and compute
    assert "**" not in card.text.split("<!-- maft-results", 1)[1].split("<!-- /maft-results -->")[0]


def test_vit_l14_and_zero_shot_columns():
    card = make_model_card("org/maft-vitl14", "openai/clip-vit-large-patch14")
    rows = table_rows(card.text)
    assert rows["ade20k_150/mIoU"][3:] == [NOT_MEASURED, "32.0"]  # Tab. 6; no released ViT-L numbers
    assert rows["pascal_voc_20/mIoU"][3:] == [NOT_MEASURED, "92.1"]
    assert "from layer 8 of 24" in card.text and "480 x 480 px" in card.text and "34 x 34 grid" in card.text

    zero = make_model_card("org/maft-zs", setting="zero_shot", results={"coco_stuff_zero_shot": {"mIoU_unseen": 49.0}})
    rows = table_rows(zero.text)
    assert rows["coco_stuff_zero_shot/mIoU (unseen)"][3:] == ["**49.00**", "50.4", "—"]
    assert rows["coco_stuff_zero_shot/hIoU"][3:] == [NOT_MEASURED, "46.5", "—"]
    assert rows["coco_stuff_zero_shot/mIoU (seen)"][3:] == [NOT_MEASURED, "43.3", "—"]
    assert reparse(zero)["datasets"] == ["coco_stuff_zero_shot"]


def test_training_and_compute_sections_render_the_run():
    card = make_model_card(
        "org/m",
        training={"max_train_steps": 500, "learning_rate": 2e-5, "seed": 3},
        compute={"hardware": "1x H100", "training_time": "12 min"},
        evaluation_proposals="mask2former:org/m2f",
    )
    assert "| Iterations | 1000 | 500 |" in card.text
    assert "| Learning rate | 1e-5 | 2e-5 |" in card.text
    assert "| Seed | — | 3 |" in card.text and "| Optimizer | AdamW | — |" in card.text
    assert "- Hardware: 1x H100" in card.text and "- Training time: 12 min" in card.text
    assert "`mask2former:org/m2f`" in card.text


@pytest.mark.parametrize(
    "results,match",
    [
        ({"ade20k_150": {"accuracy@5": 3.0}}, "Unknown metric 'accuracy@5'"),
        ({"ade20k_150": 129.0}, r"percentage in \[0, 100\], got 129"),
        ({"ade20k_150": float("nan")}, "finite number"),
        ({"ade20k_150": "29"}, "finite number"),
    ],
)
def test_bad_results_raise(results, match):
    with pytest.raises(ValueError, match=match):
        make_model_card("org/m", results=results)


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="setting must be one of"):
        make_model_card("org/m", setting="supervised")
    with pytest.raises(ValueError, match="Cannot tell the model's patch_size from base_model='my/clip'"):
        make_model_card("org/m", "my/clip")
    (tmp_path / "t.md").write_text("---\n{{ card_data }}\n---\n{{ nope }}\n")
    with pytest.raises(ValueError, match=r"needs values for \['nope'\]"):
        make_model_card("org/m", template_path=tmp_path / "t.md")


def test_update_model_card_results_merges_and_keeps_the_rest(tmp_path):
    card = make_model_card("org/maft-vitb16", results={"ade20k_150": 29.3, "pascal_voc_20": 90.0})
    (tmp_path / "ckpt").mkdir()
    card.save(tmp_path / "ckpt" / "README.md")
    before = (tmp_path / "ckpt" / "README.md").read_text()

    updated = update_model_card_results(
        tmp_path / "ckpt",
        {"ade20k_150": {"mIoU": 30.5}, "ade20k_847": 11.0},
        evaluation_proposals="sam:facebook/sam-vit-base",
    )
    after = (tmp_path / "ckpt" / "README.md").read_text()
    _, evals = model_index_to_eval_results(reparse(ModelCard(after))["model-index"])
    got = {(e.dataset_type, e.metric_value) for e in evals}
    assert got == {("ade20k_150", 30.5), ("pascal_voc_20", 90.0), ("ade20k_847", 11.0)}
    rows = table_rows(after)
    assert rows["ade20k_150/mIoU"][3] == "**30.50**" and rows["ade20k_847/mIoU"][3] == "**11.00**"
    assert rows["pascal_voc_20/mIoU"][3] == "**90.00**" and rows["pascal_context_59/mIoU"][3] == NOT_MEASURED
    assert "`sam:facebook/sam-vit-base`" in after

    def strip(text):  # the card without its metadata and results block
        return re.sub(r"<!-- maft-results.*?<!-- /maft-results -->", "", text.split("\n---\n", 1)[1], flags=re.S)

    assert strip(before) == strip(after)  # only the results changed
    assert str(updated) == after

    (tmp_path / "plain.md").write_text("---\nlicense: mit\n---\n# A card\n")
    with pytest.raises(ValueError, match="no results section"):
        update_model_card_results(tmp_path / "plain.md", {"ade20k_150": 1.0})


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_cards_parse_and_are_up_to_date(name):
    path = ROOT / "model_cards" / f"{name}.md"
    card = ModelCard.load(path)
    data = reparse(card)
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-segmentation"
    assert "model-index" not in data  # no run exists: nothing may be claimed
    assert all(cells[3] == NOT_MEASURED for cells in table_rows(card.text).values())
    model_id, base = COMMITTED[name]
    assert path.read_text() == str(make_model_card(model_id, base)), (
        f"model_cards/{name}.md is stale: python scripts/make_model_card.py --model_id {model_id} "
        f"--base_model {base} --output model_cards/{name}.md"
    )


def test_usage_snippet_runs_against_a_tiny_checkpoint(tmp_path, monkeypatch):
    checkpoint = build_tiny_checkpoint(tmp_path / "tiny-maft")
    card = make_model_card("org/maft-vitb16")
    snippet, remote = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert (
        snippet.count('"org/maft-vitb16"') == 3
        and 'pipeline(model="org/maft-vitb16", trust_remote_code=True)' in remote
    )
    monkeypatch.chdir(tmp_path)
    rng = torch.Generator().manual_seed(0)
    Image.fromarray(torch.randint(0, 256, (40, 56, 3), generator=rng, dtype=torch.uint8).numpy()).save("street.jpg")
    namespace = {}
    exec(compile(snippet.replace('"org/maft-vitb16"', repr(str(checkpoint))), "card-snippet", "exec"), namespace)
    assert namespace["segmentation"].shape == (40, 56)
    assert namespace["output"]["segmentation"].shape == (40, 56)
    assert int(namespace["segmentation"].max()) < len(namespace["vocabulary"])
    exec(compile(remote.replace('"org/maft-vitb16"', repr(str(checkpoint))), "card-remote", "exec"), namespace)
    assert namespace["output"]["segmentation"].shape == (40, 56) and namespace["output"]["class_names"] == [
        "road",
        "sky",
    ]


def test_script_writes_readme_into_a_checkpoint_and_to_stdout(tmp_path, capsys):
    checkpoint = pathlib.Path(build_tiny_checkpoint(tmp_path / "tiny-maft"))
    (tmp_path / "results.json").write_text('{"ade20k_150": {"mIoU": 12.5}}')
    script = load_script()
    script.main(
        [
            "--model_id",
            "org/tiny",
            "--checkpoint_dir",
            str(checkpoint),
            "--backbone",
            "vit-b16",
            "--results",
            str(tmp_path / "results.json"),
            "--compute",
            "2 CPU cores, 1 min",
        ]
    )
    card = ModelCard.load(checkpoint / "README.md")
    data = reparse(card)
    assert model_index_to_eval_results(data["model-index"])[1][0].metric_value == 12.5
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint)
    assert f"| Parameters | {sum(p.numel() for p in model.parameters()):,} |" in card.text
    assert "from layer 2 of 4" in card.text and "32 x 32 px" in card.text  # read from the checkpoint's config
    assert "2 CPU cores, 1 min" in card.text

    capsys.readouterr()
    script.main(["--model_id", "org/maft-vitl14", "--backbone", "vit-l14", "--output", "-"])
    out = capsys.readouterr().out
    assert reparse(ModelCard(out))["base_model"] == "openai/clip-vit-large-patch14"
