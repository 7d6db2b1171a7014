"""scripts/prepare_benchmark.py and maft_hf.data.benchmarks on tiny fake releases laid out like the real ones."""

import importlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maft_hf.data.benchmarks import (
    BENCHMARKS,
    ade20k_full_object_ids,
    build_benchmark_dataset,
    convert_ade20k_150,
    convert_coco_stuff,
    convert_pascal_context_59,
    convert_pascal_context_459,
    convert_pascal_voc_20,
    load_ade20k_847_id_map,
    official_resized_size,
    pascal_context_59_ids,
)
from maft_hf.data.labels import get_class_names

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_benchmark.py"
VOCAB = Path(__file__).resolve().parents[1] / "src" / "maft_hf" / "vocab"

# `_mapping` of the official Detail-API script datasets/prepare_pascal_ctx_sem_seg.py (reference data).
OFFICIAL_PC59_MAPPING = sorted(
    [0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454, 295, 296,
     427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349,
     360, 98, 187, 104, 105, 366, 189, 368, 113, 115]
)  # fmt: skip


def vocab_lines(name):
    return [line.strip() for line in (VOCAB / f"{name}.txt").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("maft_hf.cli.prepare_benchmark")


def write_jpeg(path, height=6, width=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":  # VOC label maps are palette images whose indices are the class ids
        image = Image.frombytes("P", array.shape[::-1], np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    else:
        image = Image.fromarray(array)
    image.save(path, format="PNG")


def run(script, tmp_path, *argv):
    out = tmp_path / "out"
    dataset_dict = script.main([*argv, "--data_root", str(tmp_path / "release"), "--output_dir", str(out)])
    return dataset_dict, out


def labels_of(dataset):
    return [np.array(example["label"]) for example in dataset]


def check_written_metadata(out, dataset, name):
    spec = BENCHMARKS[name]
    names = vocab_lines(spec.vocabulary)
    assert len(names) == spec.num_classes
    id2label = json.loads((out / "id2label.json").read_text())
    assert [id2label[str(i)] for i in range(len(names))] == names
    meta = json.loads((out / "benchmark.json").read_text())
    assert meta["ignore_index"] == spec.ignore_index and meta["num_classes"] == len(names)
    assert get_class_names(dataset) == names
    for label in labels_of(dataset):
        assert label.dtype == (np.uint8 if spec.label_bits == 8 else np.uint16)
        values = set(np.unique(label).tolist()) - {spec.ignore_index}
        assert all(0 <= v < len(names) for v in values)


# ---------------------------------------------------------------------------------------------------- COCO-Stuff


def make_coco(root):
    base = root / "coco"
    raw_a = np.array([[0, 11, 20], [181, 255, 182]], dtype=np.uint8)  # person, unused, cow / last, unlabelled, beyond
    raw_b = np.array([[11, 255], [25, 90]], dtype=np.uint8)  # only unused ids and unlabelled: dropped
    raw_c = np.array([[123, 40]], dtype=np.uint8)  # grass (unseen), skateboard (unseen)
    for stem, raw in (("000000000139", raw_a), ("000000000285", raw_b), ("000000000632", raw_c)):
        write_jpeg(base / "val2017" / f"{stem}.jpg", *raw.shape)
        write_png(base / "stuffthingmaps" / "val2017" / f"{stem}.png", raw)
    write_jpeg(base / "train2017" / "000000000009.jpg", 1, 3)
    write_png(base / "stuffthingmaps" / "train2017" / "000000000009.png", np.array([[20, 0, 123]], dtype=np.uint8))


def test_coco_stuff_conversion_matches_the_unseen_table():
    # columns of coco_stuff_unseen_15.txt: contiguous index, COCO id, raw PNG value, name
    names = vocab_lines("coco_stuff_171")
    for row in (VOCAB / "coco_stuff_unseen_15.txt").read_text().splitlines():
        if row.startswith("#") or not row.strip():
            continue
        index, coco_id, raw, name = row.split("\t")
        assert int(coco_id) == int(raw) + 1
        assert convert_coco_stuff(np.array([[int(raw)]], dtype=np.uint8))[0, 0] == int(index)
        assert names[int(index)] == name
    everything = convert_coco_stuff(np.arange(256, dtype=np.uint8)[None])
    assert sorted(set(everything[0].tolist()) - {255}) == list(range(171))


def test_prepare_coco_stuff_171(script, tmp_path):
    make_coco(tmp_path / "release")
    dataset_dict, out = run(script, tmp_path, "--benchmark", "coco_stuff_171")
    dataset = dataset_dict["validation"]
    assert dataset["file_name"] == ["000000000139", "000000000632"]  # the all-ignore map is dropped
    first, second = labels_of(dataset)
    assert first.tolist() == [[0, 255, 19], [170, 255, 255]]
    names = vocab_lines("coco_stuff_171")
    assert names[19] == "cow" and names[112] == "grass" and second.tolist() == [[112, 36]]
    assert dataset[0]["image"].mode == "RGB" and dataset[0]["image"].size == (3, 2)
    check_written_metadata(out, dataset, "coco_stuff_171")


def test_prepare_coco_stuff_zero_shot(script, tmp_path):
    make_coco(tmp_path / "release")
    spec = BENCHMARKS["coco_stuff_zero_shot"]
    unseen = spec.unseen_classes()
    assert len(unseen) == 15 and len(spec.seen_classes()) == 156 and {19, 36, 112} <= set(unseen)
    assert spec.paper_results["mIoU_unseen"] == 50.4 and spec.paper_results["hIoU"] == 46.5
    validation, out = run(script, tmp_path, "--benchmark", "coco_stuff_zero_shot")
    assert labels_of(validation["validation"])[0].tolist() == [[0, 255, 19], [170, 255, 255]]  # evaluation keeps all
    assert json.loads((out / "benchmark.json").read_text())["unseen_classes"] == unseen
    release = tmp_path / "release"
    train = build_benchmark_dataset("coco_stuff_zero_shot", release, split="train", cache_dir=tmp_path / "cache")
    assert labels_of(train)[0].tolist() == [[255, 0, 255]]  # cow and grass are unseen: ignored in training


# ---------------------------------------------------------------------------------------------------- ADE20K


def test_prepare_ade20k_150(script, tmp_path):
    base = tmp_path / "release" / "ade" / "ADEChallengeData2016"
    raw = np.array([[0, 1, 150], [3, 0, 2]], dtype=np.uint8)
    write_jpeg(base / "images" / "validation" / "ADE_val_00000001.jpg", 2, 3)
    write_png(base / "annotations" / "validation" / "ADE_val_00000001.png", raw)
    dataset_dict, out = run(script, tmp_path, "--benchmark", "ade20k_150")
    dataset = dataset_dict["validation"]
    assert labels_of(dataset)[0].tolist() == [[255, 0, 149], [2, 255, 1]]
    check_written_metadata(out, dataset, "ade20k_150")
    with pytest.raises(ValueError, match=r"ids \[151\]"):
        convert_ade20k_150(np.array([[151]], dtype=np.uint8))


def encode_ade_ids(ids):
    """_seg.png pixels of ADE20K object ids: R = (id // 256) * 10, G = id % 256, B = an instance index."""
    ids = np.asarray(ids)
    return np.stack([(ids // 256) * 10, ids % 256, np.full_like(ids, 7)], axis=-1).astype(np.uint8)


ADE_TABLE = [
    {"id": 2978, "name": "wall"},
    {"id": 312, "name": "building, edifice"},
    {"id": 14, "name": "airplane, aeroplane, plane"},
    {"id": 5, "name": "not one of the 847 classes"},
]


def test_ade20k_847_id_table_formats(tmp_path):
    names = vocab_lines("ade20k_847")
    expected = {2978: names.index("wall"), 312: names.index("building, edifice"), 14: 94}
    assert names[94] == "airplane, aeroplane, plane"
    (tmp_path / "t.json").write_text(json.dumps(ADE_TABLE))
    (tmp_path / "d.json").write_text(json.dumps({str(e["id"]): e["name"] for e in ADE_TABLE}))
    (tmp_path / "t.csv").write_text('id,name\n2978,wall\n312,"building, edifice"\n14,"airplane, aeroplane, plane"\n')
    (tmp_path / "t.tsv").write_text("2978\twall\n312\tbuilding, edifice\n14\tairplane, aeroplane, plane\t94\n")
    objectnames = ["x"] * 3000
    for entry in ADE_TABLE[:3]:
        objectnames[entry["id"] - 1] = entry["name"]  # object id = index in objectnames + 1
    with open(tmp_path / "index_ade20k.pkl", "wb") as f:
        pickle.dump({"objectnames": objectnames}, f)
    for file_name in ("t.json", "d.json", "t.csv", "t.tsv", "index_ade20k.pkl"):
        assert load_ade20k_847_id_map(tmp_path / file_name) == expected, file_name
    (tmp_path / "bad.json").write_text(json.dumps([{"id": 2978, "name": "wall", "trainId": 3}]))
    with pytest.raises(ValueError, match="trainId 3"):
        load_ade20k_847_id_map(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text(json.dumps([{"id": 2978, "name": "wall"}, {"id": 2979, "name": "wall"}]))
    with pytest.raises(ValueError, match="2978 and 2979"):
        load_ade20k_847_id_map(tmp_path / "dup.json")


def test_prepare_ade20k_847(script, tmp_path):
    base = tmp_path / "release" / "ade" / "ADE20K_2021_17_01" / "images" / "ADE" / "validation"
    small_ids = np.array([[2978, 312, 5], [0, 14, 2978]])
    write_jpeg(base / "cultural" / "apse" / "ADE_val_00000001.jpg", 2, 3)
    write_png(base / "cultural" / "apse" / "ADE_val_00000001_seg.png", encode_ade_ids(small_ids))
    # a large image: short side 520 > 512 -> resized to 512 x round(530 / 520 * 512) = 512 x 522 (labels nearest)
    big_ids = np.where(np.add.outer(np.arange(520), np.arange(530)) % 3 == 0, 2978, 14)
    big_ids[:, 300:] = 312
    write_jpeg(base / "urban" / "ADE_val_00000002.jpg", 520, 530, seed=1)
    write_png(base / "urban" / "ADE_val_00000002_seg.png", encode_ade_ids(big_ids))
    table = tmp_path / "ade20k_847.json"
    table.write_text(json.dumps(ADE_TABLE))
    dataset_dict, out = run(script, tmp_path, "--benchmark", "ade20k_847", "--ade847_id_map", str(table))
    dataset = dataset_dict["validation"]
    assert dataset["file_name"] == ["ADE_val_00000001", "ADE_val_00000002"]
    wall, building, airplane = 0, 1, 94
    assert np.array_equal(ade20k_full_object_ids(encode_ade_ids(small_ids)), small_ids)
    small, big = labels_of(dataset)
    assert small.tolist() == [[wall, building, 65535], [65535, airplane, wall]]
    assert official_resized_size(520, 530) == (512, 522)
    assert big.shape == (512, 522) and dataset[1]["image"].size == (522, 512)
    rows, cols = (np.arange(512) * 520) // 512, (np.arange(522) * 530) // 522
    lut = {2978: wall, 312: building, 14: airplane}
    expected = np.vectorize(lut.get)(big_ids[rows[:, None], cols[None, :]])
    assert np.array_equal(big, expected)
    check_written_metadata(out, dataset, "ade20k_847")


# ---------------------------------------------------------------------------------------------------- PASCAL-Context


def test_pascal_context_59_mapping_is_the_official_one():
    ids = pascal_context_59_ids()
    assert ids.tolist() == OFFICIAL_PC59_MAPPING
    names_59, names_459 = vocab_lines("pascal_context_59"), vocab_lines("pascal_context_459")
    for k, name in enumerate(names_59):
        full = names_459[ids[k + 1] - 1]
        assert full == name or (name, full) == ("diningtable", "table")
    assert convert_pascal_context_59(np.array([[0, 2, 397, 1, 458, 459]], dtype=np.uint16)).tolist() == [
        [255, 0, names_59.index("diningtable"), 255, names_59.index("wood"), 255]
    ]


def make_pascal_context(root):
    reason = "PASCAL-Context .mat files are read with scipy, which is not installed (pip install scipy)"
    scipy_io = pytest.importorskip("scipy.io", reason=reason)
    base = root / "VOCdevkit" / "VOC2010"
    label_map = np.array([[0, 2, 397, 459], [1, 458, 65, 0]], dtype=np.uint16)  # 65 = cat, 458 = wood
    for stem, array in (("2008_000002", label_map), ("2008_000003", np.zeros((2, 2), dtype=np.uint16))):
        write_jpeg(base / "JPEGImages" / f"{stem}.jpg", *array.shape)
        (base / "trainval").mkdir(parents=True, exist_ok=True)
        scipy_io.savemat(base / "trainval" / f"{stem}.mat", {"LabelMap": array})
    write_jpeg(base / "JPEGImages" / "2008_000009.jpg")  # a training image: not in val.txt
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "val.txt").write_text("2008_000003\n2008_000002\n")


def test_prepare_pascal_context_59(script, tmp_path):
    make_pascal_context(tmp_path / "release")
    dataset_dict, out = run(script, tmp_path, "--benchmark", "pascal_context_59")
    dataset = dataset_dict["validation"]
    names = vocab_lines("pascal_context_59")
    assert dataset["file_name"] == ["2008_000002", "2008_000003"]  # all-background maps are kept (official)
    first, second = labels_of(dataset)
    assert first.tolist() == [[255, 0, names.index("diningtable"), 255], [255, 58, names.index("cat"), 255]]
    assert second.tolist() == [[255, 255], [255, 255]]
    check_written_metadata(out, dataset, "pascal_context_59")


def test_prepare_pascal_context_459(script, tmp_path):
    make_pascal_context(tmp_path / "release")
    dataset_dict, out = run(script, tmp_path, "--benchmark", "pascal_context_459", "--max_images", "1")
    dataset = dataset_dict["validation"]
    names = vocab_lines("pascal_context_459")
    assert len(dataset) == 1
    assert labels_of(dataset)[0].tolist() == [[65535, 1, 396, 458], [0, 457, 64, 65535]]
    assert names[1] == "aeroplane" and names[396] == "table" and names[64] == "cat" and names[0] == "accordion"
    assert names[457] == "wood"
    check_written_metadata(out, dataset, "pascal_context_459")
    assert convert_pascal_context_459(np.array([[0, 459]])).dtype == np.uint16


# ---------------------------------------------------------------------------------------------------- PASCAL VOC


def test_prepare_pascal_voc_20(script, tmp_path):
    base = tmp_path / "release" / "VOCdevkit" / "VOC2012"
    kept = np.array([[0, 1, 20], [255, 15, 0]], dtype=np.uint8)
    dropped = np.array([[0, 255], [0, 0]], dtype=np.uint8)  # background and void only
    for stem, array in (("2007_000033", kept), ("2007_000042", dropped)):
        write_jpeg(base / "JPEGImages" / f"{stem}.jpg", *array.shape)
        write_png(base / "SegmentationClass" / f"{stem}.png", array, mode="P")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000042\n")
    assert Image.open(base / "SegmentationClass" / "2007_000033.png").mode == "P"
    dataset_dict, out = run(script, tmp_path, "--benchmark", "pascal_voc_20")
    dataset = dataset_dict["validation"]
    assert dataset["file_name"] == ["2007_000033"]
    names = vocab_lines("pascal_voc_20")
    assert labels_of(dataset)[0].tolist() == [[255, 0, 19], [255, 14, 255]]
    assert names[0] == "aeroplane" and names[14] == "person" and names[19] == "tv"
    check_written_metadata(out, dataset, "pascal_voc_20")
    assert convert_pascal_voc_20(np.array([[21, 254]], dtype=np.uint8)).tolist() == [[255, 255]]


# ---------------------------------------------------------------------------------------------------- registry, CLI


def test_registry_matches_vocab_files_and_paper():
    expected = {
        "coco_stuff_171": (171, 255),
        "coco_stuff_zero_shot": (171, 255),
        "ade20k_150": (150, 255),
        "ade20k_847": (847, 65535),
        "pascal_context_59": (59, 255),
        "pascal_context_459": (459, 65535),
        "pascal_voc_20": (20, 255),
    }
    assert set(BENCHMARKS) == set(expected)
    for name, (num_classes, ignore) in expected.items():
        spec = BENCHMARKS[name]
        assert (spec.num_classes, spec.ignore_index) == (num_classes, ignore)
        assert len(vocab_lines(spec.vocabulary)) == num_classes
        assert spec.label_bits == (16 if ignore == 65535 else 8)
    paper = {"ade20k_847": 10.1, "ade20k_150": 29.1, "pascal_context_459": 12.8, "pascal_context_59": 53.5}
    paper["pascal_voc_20"] = 90.0
    for name, miou in paper.items():
        assert BENCHMARKS[name].paper_results["mIoU"] == miou


def test_cli_errors_and_push_to_hub(script, tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        script.main(["--benchmark", "ade20k_150", "--data_root", str(tmp_path)])  # no output
    with pytest.raises(SystemExit):
        script.main(["--benchmark", "ade20k_847", "--data_root", str(tmp_path), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="ADE20K-150 annotation"):
        script.main(["--benchmark", "ade20k_150", "--data_root", str(tmp_path), "--output_dir", str(tmp_path / "o")])

    import datasets
    import huggingface_hub

    pushed, uploaded = [], []

    def fake_push(self, repo, **kwargs):
        pushed.append((repo, len(self["validation"])))

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", fake_push)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", lambda self, **kw: uploaded.append(kw["path_in_repo"]))
    base = tmp_path / "release" / "ade" / "ADEChallengeData2016"
    write_jpeg(base / "images" / "validation" / "ADE_val_00000001.jpg", 2, 2)
    write_png(base / "annotations" / "validation" / "ADE_val_00000001.png", np.ones((2, 2), dtype=np.uint8))
    script.main(
        ["--benchmark", "ade20k_150", "--data_root", str(tmp_path / "release"), "--push_to_hub",
         "--hub_dataset_id", "user/ade20k-150-maft"]
    )  # fmt: skip
    assert pushed == [("user/ade20k-150-maft", 1)]
    assert sorted(uploaded) == ["benchmark.json", "id2label.json"]


# ---------------------------------------------------------------------------------------------------- no pickle code


class _RunsCode:
    """What a tampered pickle does: `__reduce__` makes unpickling call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_ade20k_index_pickle_is_read_as_plain_data_only(script, tmp_path):
    names = ["x"] * 3000
    for entry in ADE_TABLE[:3]:
        names[entry["id"] - 1] = entry["name"]
    # the official index: a dict of lists and NumPy arrays (object arrays of names, numeric arrays)
    index = {"objectnames": np.array(names, dtype=object), "wordnet_found": np.ones(3000, dtype=bool),
             "objectPresence": np.zeros((3000, 2), dtype=np.uint16), "filename": ["ADE_val_00000001.jpg"]}  # fmt: skip
    expected = {2978: vocab_lines("ade20k_847").index("wall"), 312: 1, 14: 94}
    for protocol in (2, 4, 5):
        (tmp_path / "index_ade20k.pkl").write_bytes(pickle.dumps(index, protocol=protocol))
        assert load_ade20k_847_id_map(tmp_path / "index_ade20k.pkl") == expected, protocol

    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"objectnames": names, "payload": _RunsCode(marker)}))
    with pytest.raises(ValueError, match=r"not a plain-data ADE20K index pickle: refused to load \w+\.system"):
        load_ade20k_847_id_map(evil)
    (tmp_path / "release" / "ade").mkdir(parents=True)
    with pytest.raises(ValueError, match="refused to load"):
        run(script, tmp_path, "--benchmark", "ade20k_847", "--ade847_id_map", str(evil))
    assert not marker.exists()  # nothing in the file ran
    (tmp_path / "not_an_index.pkl").write_bytes(pickle.dumps(["a", "list"]))
    with pytest.raises(ValueError, match="'objectnames'"):
        load_ade20k_847_id_map(tmp_path / "not_an_index.pkl")


# ---------------------------------------------------------------------------------------------------- class names


def test_class_names_survive_parquet_and_the_hub_card(script, tmp_path):
    """The names live in the label feature, so a parquet export loaded with load_dataset (what push_to_hub uploads)
    and the features YAML of the Hub card keep them; the old description place is no longer needed."""
    import datasets

    from maft_hf.data.labels import dataset_metadata

    base = tmp_path / "release" / "ade" / "ADEChallengeData2016"
    write_jpeg(base / "images" / "validation" / "ADE_val_00000001.jpg", 2, 2)
    write_png(base / "annotations" / "validation" / "ADE_val_00000001.png", np.ones((2, 2), dtype=np.uint8))
    dataset = run(script, tmp_path, "--benchmark", "ade20k_150")[0]["validation"]
    names = vocab_lines("ade20k_150")
    assert dataset.info.description.startswith("A-150") and "maft_hf_class_names" not in dataset.info.description

    dataset.to_parquet(str(tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet"))
    loaded = datasets.load_dataset(str(tmp_path / "hub"), split="validation", cache_dir=str(tmp_path / "cache"))
    assert get_class_names(loaded) == names
    assert dataset_metadata(loaded)["benchmark"]["ignore_index"] == 255
    card_features = datasets.Features._from_yaml_list(dataset.features._to_yaml_list())
    rebuilt = datasets.Dataset.from_dict({k: [] for k in card_features}, features=card_features)
    assert get_class_names(rebuilt) == names
