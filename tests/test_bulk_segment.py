"""Bulk segmentation with maft-segment: list files and datasets as inputs, parquet outputs, sharding over processes,
and resuming after a kill (SIGKILL of the whole process group, 1 process and 2 through `accelerate launch`) with
outputs equal, file for file, to an uninterrupted run, nothing written twice and no temporary file left."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from maft_hf.cli import segment as cli
from maft_hf.inference.outputs import read_label_map
from maft_hf.testing import build_tiny_checkpoint

NUM_IMAGES = 12
VOCABULARY = "sky,grass,car,tree,road"

# Runs `maft-segment` with a pause after every image written, so that a kill lands midway through the run.
SLOW_DRIVER = """
import sys, time
from maft_hf.cli import segment as cli
for writer in (cli.PngWriter, cli.ParquetWriter):
    def slow_add(self, *args, _add=writer.add, **kwargs):
        _add(self, *args, **kwargs)
        time.sleep(0.4)
    writer.add = slow_add
cli.main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny MAFT checkpoint whose proposals get different classes, 12 small images of coloured blocks (varied
    sizes), the same images as a list file and as a datasets folder, and the slow driver script."""
    root = tmp_path_factory.mktemp("bulk")
    rng = np.random.default_rng(0)
    folder = root / "images"
    folder.mkdir()
    for index in range(NUM_IMAGES):
        height, width = 24 + 2 * index, 32 + 3 * (index % 4)
        blocks = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((height // 3 + 1, width // 4 + 1, 1), dtype=np.uint8))[:height, :width]
        Image.fromarray(pixels).save(folder / f"img{index:02d}.png")
    paths = sorted(folder.iterdir())
    (root / "list.txt").write_text(
        "# two images, relative to the list\n" + f"images/{paths[5].name}\n\nimages/{paths[2].name}\n"
    )
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int32")})
    rows = {"image": [str(path) for path in paths], "label": list(range(NUM_IMAGES))}
    splits = {"train": {k: v[:1] for k, v in rows.items()}, "test": rows}
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(split, features=features) for name, split in splits.items()}
    ).save_to_disk(root / "dataset")
    (root / "slow_driver.py").write_text(SLOW_DRIVER)
    return {
        "root": root,
        "images": folder,
        "paths": paths,
        "checkpoint": build_tiny_checkpoint(root / "maft", initializer_range=0.2),
    }


def _args(workspace, output_dir, *extra):
    return [
        "--model", workspace["checkpoint"], "--offline", "--vocabulary", VOCABULARY, "--proposals", "kmeans:3",
        "--batch_size", "2", "--output_dir", str(output_dir), "--log_level", "WARNING", *map(str, extra),
    ]  # fmt: skip


def _files(directory):
    return sorted(str(path.relative_to(directory)) for path in Path(directory).rglob("*") if path.is_file())


def _parquet_rows(directory):
    return [
        pq.read_table(Path(directory) / name).to_pylist() for name in _files(directory) if name.endswith(".parquet")
    ]


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory):
    """Uninterrupted in-process runs over the image folder: png and parquet (chunks of 3 images)."""
    root = tmp_path_factory.mktemp("reference")
    cli.main(_args(workspace, root / "png", "--images", workspace["images"]))
    cli.main(_args(workspace, root / "parquet", "--images", workspace["images"], "--output_format", "parquet",
                   "--chunk_size", "3"))  # fmt: skip
    return root


# ---------------------------------------------------------------------------------------------------------------
# In-process behaviour
# ---------------------------------------------------------------------------------------------------------------
def test_reference_outputs_are_complete(workspace, reference):
    png, parquet = reference / "png", reference / "parquet"
    stems = [path.stem for path in workspace["paths"]]
    expected = {f"{stem}{suffix}" for stem in stems for suffix in (".json", "_map.png", "_overlay.png")}
    assert set(_files(png)) == expected | {"summary.json", cli.RUN_FILE}
    assert _files(parquet) == sorted(
        [cli.RUN_FILE, "manifest.json"] + [f"data/chunk-{k:06d}.parquet" for k in range(4)]
    )
    manifest = json.loads((parquet / "manifest.json").read_text())
    summary = json.loads((png / "summary.json").read_text())
    assert manifest["num_images"] == summary["num_images"] == NUM_IMAGES
    assert [chunk["num_rows"] for chunk in manifest["chunks"]] == [3, 3, 3, 3]
    assert manifest["classes"] == summary["classes"] and len(summary["classes"]) > 1  # maps hold several classes


def test_parquet_holds_the_png_outputs_and_loads_with_datasets(workspace, reference):
    import datasets

    loaded = datasets.load_dataset("parquet", data_files=str(reference / "parquet" / "data" / "*.parquet"))["train"]
    assert loaded["index"] == list(range(NUM_IMAGES))
    for row, path in zip(loaded, workspace["paths"]):
        record = json.loads((reference / "png" / f"{path.stem}.json").read_text())
        np.testing.assert_array_equal(np.array(row["segmentation"]), read_label_map(reference / "png" / record["map"]))
        assert row["classes"] == record["classes"] and row["image"] == record["image"] == str(path)
        assert (row["stem"], row["height"], row["width"], row["num_proposals"]) == (
            path.stem, record["height"], record["width"], record["num_proposals"],
        )  # fmt: skip


def test_list_file_and_dataset_inputs(workspace, reference, tmp_path):
    listed = cli.main(_args(workspace, tmp_path / "list", "--images", workspace["root"] / "list.txt"))
    assert [image["stem"] for image in listed["images"]] == ["img05", "img02"]
    for stem in ("img05", "img02"):
        assert (tmp_path / "list" / f"{stem}_map.png").read_bytes() == (
            reference / "png" / f"{stem}_map.png"
        ).read_bytes()

    dataset = workspace["root"] / "dataset"
    summary = cli.main(_args(workspace, tmp_path / "data", "--dataset_path", dataset, "--split", "test"))
    assert summary["num_images"] == NUM_IMAGES and summary["images"][3]["image"] == f"{dataset}#3"
    for index, path in enumerate(workspace["paths"]):
        np.testing.assert_array_equal(
            read_label_map(tmp_path / "data" / f"{index:08d}_map.png"),
            read_label_map(reference / "png" / f"{path.stem}_map.png"),
        )


def test_streamed_dataset_equals_the_folder(workspace, reference, tmp_path):
    """A dataset streamed through `datasets.load_dataset` (here a local image folder): the total is only known at the
    end of the stream, and every row is an image."""
    summary = cli.main(_args(workspace, tmp_path, "--dataset_name", workspace["images"], "--streaming",
                             "--output_format", "parquet", "--chunk_size", "5"))  # fmt: skip
    assert summary["num_images"] == NUM_IMAGES and [c["num_rows"] for c in summary["chunks"]] == [5, 5, 2]
    reference_rows = [row for rows in _parquet_rows(reference / "parquet") for row in rows]
    rows = [row for rows in _parquet_rows(tmp_path) for row in rows]
    assert [row["segmentation"] for row in rows] == [row["segmentation"] for row in reference_rows]


def test_text_classifier_is_built_once_per_process(workspace, tmp_path, monkeypatch):
    calls = []
    build = cli.build_text_classifier
    monkeypatch.setattr(cli, "build_text_classifier", lambda *a, **k: calls.append(a[2]) or build(*a, **k))
    cli.main(_args(workspace, tmp_path, "--images", workspace["images"]))
    assert calls == [VOCABULARY.split(",")]


def test_resume_redoes_only_incomplete_images(workspace, reference, tmp_path):
    """An image whose json is missing (killed before it was written) is redone; complete ones are not touched; temporary
    files left by the kill are removed."""
    output = tmp_path / "out"
    cli.main(_args(workspace, output, "--images", workspace["images"]))
    (output / "img04.json").unlink()
    (output / "img07_map.png").write_bytes(b"partial")  # json still there: counts as complete, so stays untouched
    (output / "img09.json").unlink()
    (output / "img09_overlay.png").unlink()
    (output / ".img09_map.png.123-abcd.tmp").write_bytes(b"partial")
    before = {name: os.stat(output / name).st_ino for name in _files(output)}
    cli.main(_args(workspace, output, "--images", workspace["images"], "--resume"))
    after = {name: os.stat(output / name).st_ino for name in _files(output)}
    redone = sorted(name for name in after if before.get(name) != after[name])
    assert redone == [cli.RUN_FILE, "img04.json", "img04_map.png", "img04_overlay.png", "img09.json", "img09_map.png",
                      "img09_overlay.png", "summary.json"]  # fmt: skip
    assert (output / "img07_map.png").read_bytes() == b"partial"
    assert (output / "img09_map.png").read_bytes() == (reference / "png" / "img09_map.png").read_bytes()


def test_resume_refuses_other_settings(workspace, tmp_path):
    cli.main(_args(workspace, tmp_path, "--images", workspace["paths"][0]))
    with pytest.raises(ValueError, match="other settings.*class_names, vocabulary"):
        cli.main(_args(workspace, tmp_path, "--images", workspace["paths"][0], "--resume", "--vocabulary", "sky,car"))


def test_resume_of_a_run_file_without_the_later_settings(workspace, tmp_path):
    """Run files written before --preprocessing / --ensemble_formula existed resume with the values they used."""
    cli.main(_args(workspace, tmp_path, "--images", workspace["paths"][0]))
    run_file = tmp_path / cli.RUN_FILE
    recorded = json.loads(run_file.read_text())
    run_file.write_text(
        json.dumps({k: v for k, v in recorded.items() if k not in ("preprocessing", "ensemble_formula")})
    )
    cli.main(_args(workspace, tmp_path, "--images", workspace["paths"][0], "--resume"))
    assert json.loads(run_file.read_text()) == recorded
    run_file.write_text(json.dumps({k: v for k, v in recorded.items() if k != "preprocessing"}))
    with pytest.raises(ValueError, match=r"other settings \(preprocessing\)"):
        cli.main(
            _args(workspace, tmp_path, "--images", workspace["paths"][0], "--resume", "--preprocessing", "released")
        )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset_path", "{root}/dataset"], r"Give --split, one of \['test', 'train'\]"),
        (["--dataset_path", "{root}/dataset", "--split", "test", "--image_column", "img"], "no column 'img'.*'image'"),
        (["--dataset_path", "{root}/missing"], "Cannot load the dataset folder"),
        (["--dataset_path", "{root}/dataset", "--streaming"], "--streaming applies to --dataset_name"),
        (["--images", "{root}/images", "--chunk_size", "0"], "--chunk_size must be >= 1"),
        (["--images", "{root}/missing.txt"], "No such image file"),
    ],
)
def test_bad_bulk_inputs(workspace, tmp_path, extra, message):
    extra = [item.format(root=workspace["root"]) for item in extra]
    with pytest.raises(ValueError, match=message):
        cli.main(_args(workspace, tmp_path, *extra))


def test_list_file_with_missing_images(workspace, tmp_path):
    listing = tmp_path / "list.lst"
    listing.write_text(f"{workspace['paths'][0]}\nnot_there.png\n")
    with pytest.raises(ValueError, match="names 1 missing files.*not_there.png"):
        cli.main(_args(workspace, tmp_path / "out", "--images", listing))


# ---------------------------------------------------------------------------------------------------------------
# Kill and resume, 1 and 2 processes
# ---------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(workspace, num_processes, args):
    script = str(workspace["root"] / "slow_driver.py")
    if num_processes == 1:
        return [sys.executable, script, *args]
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), script, *args,
    ]  # fmt: skip


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "CUDA_"))}
    src = str(Path(cli.__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": pythonpath, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def _finished(output, output_format):
    if output_format == "png":
        return len(list(output.glob("*.json")))
    return len(list(output.glob("data/chunk-*.parquet")))


def _kill_midway(command, output, output_format, at_least, timeout=90):
    """Start `command` in its own process group and SIGKILL the group once `at_least` images (chunks) are done."""
    process = subprocess.Popen(
        command, env=_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout
    while _finished(output, output_format) < at_least:
        if process.poll() is not None:
            raise AssertionError("The run ended before it could be killed:\n" + process.stdout.read().decode()[-4000:])
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("No outputs appeared in time.")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("num_processes", [1, 2])
@pytest.mark.parametrize("output_format", ["png", "parquet"])
def test_killed_run_resumes_to_the_uninterrupted_outputs(workspace, reference, tmp_path, num_processes, output_format):
    output = tmp_path / "out"
    args = _args(workspace, output, "--images", workspace["images"], "--output_format", output_format,
                 "--chunk_size", "3")  # fmt: skip
    _kill_midway(
        _command(workspace, num_processes, args), output, output_format, at_least=2 if output_format == "png" else 1
    )
    done = _finished(output, output_format)
    assert 0 < done < (NUM_IMAGES if output_format == "png" else 4)  # killed midway
    assert not (output / ("summary.json" if output_format == "png" else "manifest.json")).exists()
    complete = [name for name in _files(output) if name.endswith((".json", ".parquet")) and name != cli.RUN_FILE]
    complete += [
        name.replace(".json", suffix)
        for name in complete
        if name.endswith(".json")
        for suffix in ("_map.png", "_overlay.png")
    ]
    stamps = {name: os.stat(output / name).st_ino for name in complete}

    resume = _command(workspace, num_processes, [*args, "--resume", "--log_level", "INFO"])
    resumed = subprocess.run(resume, env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert f"process {num_processes} of {num_processes}" in resumed.stderr

    assert {name: os.stat(output / name).st_ino for name in complete} == stamps  # nothing written twice
    expected = reference / output_format
    assert _files(output) == _files(expected)  # nothing lost, no temporary file left
    for name in _files(expected):
        if name.endswith(".parquet"):
            assert pq.read_table(output / name).equals(pq.read_table(expected / name)), name
        else:
            assert (output / name).read_bytes() == (expected / name).read_bytes(), name
