"""The benchmarks of MAFT ([`BENCHMARKS`]: vocabulary, ignore index, label bit depth, unseen classes, the paper's
numbers) and the conversion of each official release into a `datasets.Dataset` ([`build_benchmark_dataset`], the
`maft-prepare-benchmark` command). The label conversions are those of the released `datasets/prepare_*.py`
scripts, one NumPy function per release (`convert_*`). Converted label maps are lossless PNGs: mode "L" (ignore 255)
or 16-bit "I;16" (ignore 65535, A-847 and PC-459), which decode back to exactly the stored ids.
"""

from __future__ import annotations

import builtins
import codecs
import csv
import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from maft_hf.data.labels import (
    coco_stuff_lut,
    coco_stuff_unseen_ids,
    features_with_class_names,
    label_map_array,
    map_labels,
    zero_shot_ignore,
)
from maft_hf.inference.vocabulary import load_vocabulary

logger = logging.getLogger(__name__)

IGNORE_8BIT = 255
IGNORE_16BIT = 65535
CONVERSION_VERSION = "2"  # part of the dataset fingerprint: bump when a conversion changes

SPLITS = ("validation", "train")

# ------------------------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BenchmarkSpec:
    """One evaluation benchmark: `vocabulary` is a shipped vocabulary (line `i` = class id `i`); `label_bits` 8
    or 16; `setting` `"zero_shot"` or `"open_vocabulary"`; `drop_all_ignore`: images whose converted map is all
    ignore are not written (official COCO and VOC scripts); `max_short_side`: the official resize (A-847);
    `paper_results` (FreeSeg + MAFT, ViT-B/16, percent) with their `paper_results_source`,
    `released_checkpoint_results` (authors' README) and `other_paper_results` (more rows of the paper)."""

    name: str
    display_name: str
    vocabulary: str
    num_classes: int
    ignore_index: int
    label_bits: int
    setting: str
    unseen_vocabulary: str | None = None
    drop_all_ignore: bool = False
    max_short_side: int | None = None
    paper_results: Mapping[str, float] = field(default_factory=dict)
    paper_results_source: str = ""
    released_checkpoint_results: Mapping[str, float] = field(default_factory=dict)
    other_paper_results: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def label_dtype(self) -> type:
        """`np.uint8` for 8-bit label maps, `np.uint16` for 16-bit ones."""
        return np.uint8 if self.label_bits == 8 else np.uint16

    def class_names(self) -> list[str]:
        """The `num_classes` class names (line `i` of the vocabulary file = class id `i`)."""
        names = load_vocabulary(self.vocabulary)
        if len(names) != self.num_classes:
            raise ValueError(f"{self.vocabulary}.txt has {len(names)} names, {self.name} expects {self.num_classes}.")
        return names

    def unseen_classes(self) -> list[int]:
        """Sorted ids of the unseen classes (empty for open-vocabulary benchmarks)."""
        if self.unseen_vocabulary is None:
            return []
        return sorted(coco_stuff_unseen_ids())

    def seen_classes(self) -> list[int]:
        """Sorted ids of the seen classes (all classes for open-vocabulary benchmarks)."""
        unseen = set(self.unseen_classes())
        return [i for i in range(self.num_classes) if i not in unseen]


_TAB3 = "paper Tab. 3 (open-vocabulary, trained on COCO-Stuff 171), FreeSeg + MAFT, ViT-B/16"


def _open_vocabulary_rows(frozen: float, vit_l: float, rn50: float) -> dict[str, dict[str, float]]:
    return {
        "FreeSeg, frozen CLIP ViT-B/16 (Tab. 3)": {"mIoU": frozen},
        "FreeSeg + MAFT, CLIP ViT-L/14 (Tab. 6)": {"mIoU": vit_l},
        "FreeSeg + MAFT, CLIP RN50 (Tab. 6)": {"mIoU": rn50},
    }


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "coco_stuff_171": BenchmarkSpec(
        name="coco_stuff_171",
        display_name="COCO-Stuff-171",
        vocabulary="coco_stuff_171",
        num_classes=171,
        ignore_index=IGNORE_8BIT,
        label_bits=8,
        setting="open_vocabulary",
        drop_all_ignore=True,
        paper_results_source="none: the training set of the open-vocabulary setting; the paper reports no score on it",
    ),
    "coco_stuff_zero_shot": BenchmarkSpec(
        name="coco_stuff_zero_shot",
        display_name="COCO-Stuff (156 seen / 15 unseen)",
        vocabulary="coco_stuff_171",
        num_classes=171,
        ignore_index=IGNORE_8BIT,
        label_bits=8,
        setting="zero_shot",
        unseen_vocabulary="coco_stuff_unseen_15",
        drop_all_ignore=True,
        paper_results={"mIoU_seen": 43.3, "mIoU_unseen": 50.4, "hIoU": 46.5, "mIoU": 43.9},
        paper_results_source=(
            "paper Tab. 1 (mIoU_seen, mIoU_unseen, hIoU) and Tab. 7 / 8 (mIoU over all 171 classes), "
            "FreeSeg + MAFT, ViT-B/16, with the ensemble of Eq. 9"
        ),
        other_paper_results={
            "FreeSeg, frozen CLIP (Tab. 1)": {"mIoU_seen": 42.4, "mIoU_unseen": 42.2, "hIoU": 42.3},
            "FreeSeg + MAFT without ensemble (Tab. 2)": {"mIoU_seen": 40.1, "mIoU_unseen": 49.7, "hIoU": 44.4},
            "FreeSeg, frozen CLIP, without ensemble (Tab. 2)": {"mIoU_seen": 22.3, "mIoU_unseen": 29.3, "hIoU": 25.3},
            "SAM-H + MAFT (Tab. 5a)": {"mIoU_seen": 43.4, "mIoU_unseen": 51.5, "hIoU": 47.1, "mIoU": 44.1},
            "Upper bound, S_IoU instead of A^c (Tab. 7)": {
                "mIoU_seen": 77.2,
                "mIoU_unseen": 82.1,
                "hIoU": 79.6,
                "mIoU": 77.6,
            },
        },
    ),
    "ade20k_150": BenchmarkSpec(
        name="ade20k_150",
        display_name="A-150",
        vocabulary="ade20k_150",
        num_classes=150,
        ignore_index=IGNORE_8BIT,
        label_bits=8,
        setting="open_vocabulary",
        paper_results={"mIoU": 29.1},
        paper_results_source=_TAB3,
        released_checkpoint_results={"mIoU": 29.14},
        other_paper_results=_open_vocabulary_rows(17.9, 32.0, 27.0),
    ),
    "ade20k_847": BenchmarkSpec(
        name="ade20k_847",
        display_name="A-847",
        vocabulary="ade20k_847",
        num_classes=847,
        ignore_index=IGNORE_16BIT,
        label_bits=16,
        setting="open_vocabulary",
        max_short_side=512,
        paper_results={"mIoU": 10.1},
        paper_results_source=_TAB3,
        released_checkpoint_results={"mIoU": 10.25},
        other_paper_results=_open_vocabulary_rows(7.1, 12.1, 8.4),
    ),
    "pascal_context_59": BenchmarkSpec(
        name="pascal_context_59",
        display_name="PC-59",
        vocabulary="pascal_context_59",
        num_classes=59,
        ignore_index=IGNORE_8BIT,
        label_bits=8,
        setting="open_vocabulary",
        paper_results={"mIoU": 53.5},
        paper_results_source=_TAB3,
        released_checkpoint_results={"mIoU": 53.33},
        other_paper_results=_open_vocabulary_rows(34.4, 58.5, 50.8),
    ),
    "pascal_context_459": BenchmarkSpec(
        name="pascal_context_459",
        display_name="PC-459",
        vocabulary="pascal_context_459",
        num_classes=459,
        ignore_index=IGNORE_16BIT,
        label_bits=16,
        setting="open_vocabulary",
        paper_results={"mIoU": 12.8},
        paper_results_source=_TAB3,
        released_checkpoint_results={"mIoU": 12.85},
        other_paper_results=_open_vocabulary_rows(6.4, 15.7, 9.9),
    ),
    "pascal_voc_20": BenchmarkSpec(
        name="pascal_voc_20",
        display_name="PAS-20",
        vocabulary="pascal_voc_20",
        num_classes=20,
        ignore_index=IGNORE_8BIT,
        label_bits=8,
        setting="open_vocabulary",
        drop_all_ignore=True,
        paper_results={"mIoU": 90.0},
        paper_results_source=_TAB3,
        released_checkpoint_results={"mIoU": 90.44},
        other_paper_results=_open_vocabulary_rows(85.6, 92.1, 89.0),
    ),
}


def get_benchmark(name: str) -> BenchmarkSpec:
    """The [`BenchmarkSpec`] registered as `name` (a `ValueError` lists the valid names)."""
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}.")
    return BENCHMARKS[name]


# ------------------------------------------------------------------------------------------------------------------
# Label conversion, one function per release (pure NumPy)
# ------------------------------------------------------------------------------------------------------------------


def _convert(raw: Any, lut: np.ndarray, what: str) -> np.ndarray:
    return map_labels(label_map_array(raw, what), lut, what)


def convert_coco_stuff(raw: Any) -> np.ndarray:
    """COCO-Stuff `stuffthingmaps` (value = COCO id - 1, 255 unlabelled) -> uint8 ids: the 171 used values -> 0..170,
    the rest -> 255 (official `prepare_coco_stuff_sem_seg.py`)."""
    return _convert(raw, coco_stuff_lut(IGNORE_8BIT), "COCO-Stuff label")


def convert_ade20k_150(raw: Any) -> np.ndarray:
    """ADEChallengeData2016 PNG (0 = other) -> uint8 ids: 0 -> 255, v -> v - 1 (official `prepare_ade20k_sem_seg.py`);
    values above 150 raise `ValueError`."""
    lut = np.concatenate([[IGNORE_8BIT], np.arange(150)]).astype(np.uint8)
    return _convert(raw, lut, "ADE20K-150 label")


def ade20k_full_object_ids(seg_rgb: Any) -> np.ndarray:
    """Object ids `(R // 10) * 256 + G` of an ADE20K full-release `*_seg.png` `(H, W, 3)` array (ADE20K toolkit
    `loadAde20K`): 0 = unlabelled, else position in the index's `objectnames` + 1."""
    seg = np.asarray(seg_rgb)
    if seg.ndim != 3 or seg.shape[2] < 2:
        raise ValueError(f"expected an (H, W, 3) RGB _seg.png array, got shape {seg.shape}.")
    red, green = seg[..., 0].astype(np.int32), seg[..., 1].astype(np.int32)
    return (red // 10) * 256 + green


def convert_ade20k_847(object_ids: Any, id_to_train_id: Mapping[int, int]) -> np.ndarray:
    """ADE20K object ids -> uint16 A-847 train ids through `id_to_train_id` ([`load_ade20k_847_id_map`]); other
    ids (and 0) -> 65535 (official `prepare_ade20k_full_sem_seg.py`)."""
    ids = label_map_array(object_ids, "ADE20K object-id map")
    out = np.full(ids.shape, IGNORE_16BIT, dtype=np.uint16)
    for object_id in np.unique(ids):
        train_id = id_to_train_id.get(int(object_id))
        if train_id is not None:
            out[ids == object_id] = train_id
    return out


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles plain data only: the containers pickle builds itself and NumPy arrays; any other global (a
    function, a class: what a malicious pickle calls) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        if (module.split(".")[-1], name) in _SAFE_GLOBALS and module.split(".")[0] == "numpy":
            return _SAFE_GLOBALS[module.split(".")[-1], name]()
        if (module, name) in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[module, name]
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: only plain data (dict, list, str, numbers, NumPy arrays) is read."
        )


def _numpy_core(module: str):
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # NumPy 1.x
        return importlib.import_module(f"numpy.core.{module}")


_SAFE_GLOBALS = {
    ("multiarray", "_reconstruct"): lambda: _numpy_core("multiarray")._reconstruct,
    ("multiarray", "scalar"): lambda: _numpy_core("multiarray").scalar,
    ("numeric", "_frombuffer"): lambda: _numpy_core("numeric")._frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}
_SAFE_BUILTINS = {
    (module, name): getattr(builtins, name)
    for module in ("builtins", "__builtin__")  # the latter in protocol 0-2 (and Python 2) pickles
    for name in ("set", "frozenset", "complex", "bytearray")
}
_SAFE_BUILTINS["_codecs", "encode"] = codecs.encode  # how protocol 2 stores bytes (a str encoded as latin-1)


def load_ade20k_index(path: str | os.PathLike) -> dict:
    """The release's `index_ade20k.pkl` (a dict of lists and NumPy arrays: `objectnames`, `wordnet_*`, ...), read
    with an unpickler that builds plain data only, so a tampered file cannot run code; it must hold `objectnames`."""
    try:
        with open(path, "rb") as f:
            index = _IndexUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a plain-data ADE20K index pickle: {err}") from err
    if not isinstance(index, Mapping) or "objectnames" not in index:
        raise ValueError(f"{path}: expected the ADE20K index (a dict with an 'objectnames' list).")
    return dict(index)


def _read_id_name_rows(path: Path) -> list[tuple[int, str, int | None]]:
    """(object id, name, train id or None) rows of an ADE20K id table file."""
    suffix = path.suffix.lower()
    rows: list[tuple[int, str, int | None]] = []
    if suffix == ".pkl":
        index = load_ade20k_index(path)
        return [(i + 1, str(name), None) for i, name in enumerate(index["objectnames"])]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, Mapping):
            return [(int(k), str(v), None) for k, v in data.items()]
        for entry in data:
            train_id = entry.get("trainId", entry.get("train_id"))
            rows.append((int(entry["id"]), str(entry["name"]), None if train_id is None else int(train_id)))
        return rows
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="," if suffix == ".csv" else "\t")
        for line in reader:
            if not line or not line[0].strip() or line[0].lstrip().startswith("#"):
                continue
            if not line[0].strip().lstrip("-").isdigit():
                continue  # header row
            if len(line) < 2:
                raise ValueError(f"{path}: expected rows 'id<sep>name[<sep>trainId]', got {line!r}.")
            train_id = int(line[2]) if len(line) > 2 and line[2].strip() else None
            rows.append((int(line[0]), line[1].strip(), train_id))
    return rows


def load_ade20k_847_id_map(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> dict[int, int]:
    """The ADE20K object id -> A-847 train id table, read from a local file and matched to our 847 names.

    The official table (`ADE20K_SEM_SEG_FULL_CATEGORIES` of ODISE / MAFT `register_ade20k.py`) is in no download.
    Accepted: `.json` (a list of `{"id", "name"[, "trainId"]}` or an `{"<id>": "<name>"}` object), `.csv` / `.tsv` /
    `.txt` rows `id, name[, trainId]` (optional header), or the release's `index_ade20k.pkl` (object id = position
    in `objectnames` + 1), read by [`load_ade20k_index`], which never runs code from the file. Rows whose name is
    not one of the 847 are skipped; two ids for one name raise `ValueError`; names no row names are logged (their
    pixels become 65535)."""
    names = list(class_names) if class_names is not None else BENCHMARKS["ade20k_847"].class_names()
    train_id_of_name = {name: i for i, name in enumerate(names)}
    table: dict[int, int] = {}
    id_of_name: dict[str, int] = {}
    for object_id, name, train_id in _read_id_name_rows(Path(path)):
        name = name.strip()
        if name not in train_id_of_name:
            continue
        expected = train_id_of_name[name]
        if train_id is not None and train_id != expected:
            raise ValueError(f"{path}: {name!r} has trainId {train_id} but is class {expected} of the 847 names.")
        if name in id_of_name and id_of_name[name] != object_id:
            raise ValueError(
                f"{path}: class {name!r} is named by object ids {id_of_name[name]} and {object_id}; the official "
                "table maps one id per class: keep one of them."
            )
        id_of_name[name] = object_id
        table[object_id] = expected
    missing = [name for name in names if name not in id_of_name]
    if missing:
        logger.warning(
            "%d of the %d A-847 class names have no object id in %s (their pixels become 65535), e.g. %s",
            len(missing),
            len(names),
            path,
            missing[:5],
        )
    return table


# PASCAL-Context 59: the class named "diningtable" in the 59-class list is "table" in the 459-class list.
PASCAL_CONTEXT_59_ALIASES = {"diningtable": "table"}


def pascal_context_59_ids() -> np.ndarray:
    """The 60 increasing ids of the official PC-59 conversion: 0 (background) and the 459-scheme id (line + 1 in the
    459-class list, "diningtable" -> "table") of each of the 59 classes, which equals the `_mapping` of the official
    script (checked by the tests)."""
    names_59 = BENCHMARKS["pascal_context_59"].class_names()
    names_459 = BENCHMARKS["pascal_context_459"].class_names()
    ids = []
    for name in names_59:
        full_name = PASCAL_CONTEXT_59_ALIASES.get(name, name)
        if full_name not in names_459:
            raise ValueError(f"PC-59 class {name!r} is not in the 459-class vocabulary.")
        ids.append(names_459.index(full_name) + 1)
    if ids != sorted(ids):
        raise ValueError("the 59-class order does not follow the 459-class ids; the official mapping assumes it does.")
    return np.array([0] + ids, dtype=np.int64)


def convert_pascal_context_59(label_map: Any) -> np.ndarray:
    """PASCAL-Context 459-scheme ids -> uint8 PC-59 ids: the 59 classes -> 0..58, everything else -> 255 (official
    `prepare_pascal_ctx_sem_seg.py`, which reads the same ids from the Detail API and subtracts 1 in uint8)."""
    lut = np.full(460, IGNORE_8BIT, dtype=np.uint8)
    lut[pascal_context_59_ids()[1:]] = np.arange(59, dtype=np.uint8)
    return _convert(label_map, lut, "PASCAL-Context label")


def convert_pascal_context_459(label_map: Any) -> np.ndarray:
    """PASCAL-Context `LabelMap` (1..459, 0 = unlabelled) -> uint16 ids: 0 -> 65535, v -> v - 1
    (official `prepare_pascal_ctx_full_sem_seg.py`)."""
    lut = np.concatenate([[IGNORE_16BIT], np.arange(459)]).astype(np.uint16)
    return _convert(label_map, lut, "PASCAL-Context label")


def read_pascal_context_mat(path: str | os.PathLike) -> np.ndarray:
    """The `LabelMap` `(H, W)` of a PASCAL-Context `trainval/<id>.mat` file (needs `scipy`)."""
    try:
        from scipy.io import loadmat
    except ImportError as error:  # scipy is an optional dependency
        raise ImportError(
            "Reading PASCAL-Context .mat files needs scipy, which is not installed: `pip install scipy`."
        ) from error
    content = loadmat(os.fspath(path))
    if "LabelMap" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise ValueError(f"{path}: no 'LabelMap' variable (found {found}).")
    return np.asarray(content["LabelMap"])


def convert_pascal_voc_20(raw: Any) -> np.ndarray:
    """VOC2012 `SegmentationClass` palette indices -> uint8 ids: 1..20 -> 0..19, everything else (background 0,
    void 255) -> 255, since PAS-20 is evaluated on the 20 object classes (official `prepare_voc_sem_seg.py`)."""
    lut = np.full(256, IGNORE_8BIT, dtype=np.uint8)
    lut[1:21] = np.arange(20, dtype=np.uint8)
    return _convert(raw, lut, "VOC label")


def is_all_ignore(label: np.ndarray, ignore_index: int) -> bool:
    """Whether every pixel of `label` is `ignore_index` (such images are dropped from COCO-Stuff and VOC)."""
    return bool(np.all(np.asarray(label) == ignore_index))


def official_resized_size(height: int, width: int, max_size: int = 512) -> tuple[int, int] | None:
    """Target `(height, width)` of the A-847 script: short side -> `max_size` when it is longer; `None` = keep."""
    if width >= height > max_size:
        return max_size, round(width / float(height) * max_size)
    if height >= width > max_size:
        return round(height / float(width) * max_size), max_size
    return None


def resize_label_nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with OpenCV's `INTER_NEAREST` rule (source index `floor(dst * src / dst_size)`)."""
    height, width = label.shape[:2]
    new_height, new_width = size
    rows = np.minimum(np.floor(np.arange(new_height) * (1.0 / (new_height / height))).astype(np.int64), height - 1)
    cols = np.minimum(np.floor(np.arange(new_width) * (1.0 / (new_width / width))).astype(np.int64), width - 1)
    return label[rows[:, None], cols[None, :]]


def resize_image_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 `(H, W)` or `(H, W, C)` image, half-pixel centres, no antialiasing (the geometry of
    OpenCV's `INTER_LINEAR`; OpenCV's fixed-point arithmetic can differ by 1 grey level)."""
    import torch

    array = np.asarray(image)
    tensor = torch.from_numpy(array.astype(np.float32))
    tensor = tensor[None, None] if array.ndim == 2 else tensor.permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=False)
    resized = resized.round().clamp(0, 255).to(torch.uint8)[0]
    return (resized[0] if array.ndim == 2 else resized.permute(1, 2, 0)).numpy()


# ------------------------------------------------------------------------------------------------------------------
# Release layouts and dataset building
# ------------------------------------------------------------------------------------------------------------------

RELEASE_LAYOUTS = {
    "coco_stuff": """\
coco/                                  # --data_root/coco
  val2017/*.jpg                        # http://images.cocodataset.org/zips/val2017.zip (train2017/ for --split train)
  stuffthingmaps/val2017/*.png         # stuffthingmaps_trainval2017.zip (raw value = COCO id - 1, 255 unlabelled)""",
    "ade20k_150": """\
ade/ADEChallengeData2016/              # ADEChallengeData2016.zip
  images/validation/ADE_val_*.jpg      # (training/ for --split train)
  annotations/validation/ADE_val_*.png""",
    "ade20k_847": """\
ade/ADE20K_2021_17_01/                 # the full ADE20K release (registration needed), unzipped
  images/ADE/validation/**/ADE_val_*.jpg   # any depth of scene folders (training/ for --split train)
  images/ADE/validation/**/ADE_val_*_seg.png
plus an id table for --ade847_id_map (see load_ade20k_847_id_map): a json/csv/tsv of `id, name` rows or the
release's index_ade20k.pkl""",
    "pascal_context": """\
VOCdevkit/VOC2010/                     # VOCtrainval_03-May-2010.tar
  JPEGImages/*.jpg
  ImageSets/Main/val.txt               # the 5105 PASCAL-Context validation images (train.txt: 4998)
  trainval/*.mat                       # PASCAL-Context trainval.tar.gz: LabelMap, 459-class ids""",
    "pascal_voc_20": """\
VOCdevkit/VOC2012/                     # VOCtrainval_11-May-2012.tar
  JPEGImages/*.jpg
  ImageSets/Segmentation/val.txt       # 1449 images (train.txt for --split train)
  SegmentationClass/*.png              # palette PNG, or SegmentationClassAug/ (grayscale) via label_dir""",
}


def _layout_key(name: str) -> str:
    if name.startswith("coco_stuff"):
        return "coco_stuff"
    if name.startswith("pascal_context"):
        return "pascal_context"
    return name


class ReleaseSample(NamedTuple):
    """One image of a release: its id (file stem), image path and label path."""

    file_name: str
    image_path: Path
    label_path: Path


def _read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing image list {path}.")
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"missing {what} folder {path}.")
    return path


def find_release_samples(
    name: str,
    data_root: str | os.PathLike,
    split: str = "validation",
    split_file: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
) -> list[ReleaseSample]:
    """The images of one split of a release, sorted by file name ([`RELEASE_LAYOUTS`]). `data_root` holds `coco/`,
    `ade/`, `VOCdevkit/`; `split_file` (PASCAL-Context / VOC) replaces the `ImageSets` list; `label_dir` (VOC) the
    label folder."""
    get_benchmark(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    root = Path(data_root)
    validation = split == "validation"
    samples: list[ReleaseSample] = []
    if name.startswith("coco_stuff"):
        folder = "val2017" if validation else "train2017"
        label_folder = _require_dir(root / "coco" / "stuffthingmaps" / folder, "COCO-Stuff label")
        image_folder = _require_dir(root / "coco" / folder, "COCO image")
        for label in sorted(label_folder.glob("*.png")):
            samples.append(ReleaseSample(label.stem, image_folder / f"{label.stem}.jpg", label))
    elif name == "ade20k_150":
        folder = "validation" if validation else "training"
        base = root / "ade" / "ADEChallengeData2016"
        label_folder = _require_dir(base / "annotations" / folder, "ADE20K-150 annotation")
        image_folder = _require_dir(base / "images" / folder, "ADE20K-150 image")
        for label in sorted(label_folder.glob("*.png")):
            samples.append(ReleaseSample(label.stem, image_folder / f"{label.stem}.jpg", label))
    elif name == "ade20k_847":
        folder = "validation" if validation else "training"
        image_folder = _require_dir(root / "ade" / "ADE20K_2021_17_01" / "images" / "ADE" / folder, "ADE20K image")
        for image in sorted(image_folder.rglob("*.jpg"), key=lambda p: p.name):
            samples.append(ReleaseSample(image.stem, image, image.with_name(f"{image.stem}_seg.png")))
    elif name.startswith("pascal_context"):
        base = root / "VOCdevkit" / "VOC2010"
        default_list = base / "ImageSets" / "Main" / f"{'val' if validation else 'train'}.txt"
        for image_id in sorted(_read_id_list(Path(split_file) if split_file else default_list)):
            image, label = base / "JPEGImages" / f"{image_id}.jpg", base / "trainval" / f"{image_id}.mat"
            samples.append(ReleaseSample(image_id, image, label))
    elif name == "pascal_voc_20":
        base = root / "VOCdevkit" / "VOC2012"
        default_list = base / "ImageSets" / "Segmentation" / f"{'val' if validation else 'train'}.txt"
        labels = Path(label_dir) if label_dir else base / "SegmentationClass"
        for image_id in sorted(_read_id_list(Path(split_file) if split_file else default_list)):
            samples.append(ReleaseSample(image_id, base / "JPEGImages" / f"{image_id}.jpg", labels / f"{image_id}.png"))
    missing = [s for s in samples if not s.image_path.is_file() or not s.label_path.is_file()]
    if missing:
        first = missing[0]
        raise FileNotFoundError(
            f"{len(missing)} of {len(samples)} {name} images lack their image or label file, e.g. {first.image_path} "
            f"/ {first.label_path}."
        )
    if not samples:
        raise FileNotFoundError(
            f"no {name} images found for split {split!r} under {root}; expected:\n{RELEASE_LAYOUTS[_layout_key(name)]}"
        )
    return samples


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image)


def convert_release_label(
    name: str, label_path: str | os.PathLike, split: str = "validation", ade847_id_map: Mapping[int, int] | None = None
) -> np.ndarray:
    """One release label file converted to the benchmark's ids (`coco_stuff_zero_shot` train: unseen -> 255)."""
    path = Path(label_path)
    if name.startswith("coco_stuff"):
        label = convert_coco_stuff(_read_png(path))
        if name == "coco_stuff_zero_shot" and split == "train":
            label = zero_shot_ignore(label, BENCHMARKS[name].unseen_classes(), IGNORE_8BIT)
        return label
    if name == "ade20k_150":
        return convert_ade20k_150(_read_png(path))
    if name == "ade20k_847":
        if ade847_id_map is None:
            raise ValueError("ade20k_847 needs the object id -> train id table (`ade847_id_map`).")
        rgb = _read_png(path)
        return convert_ade20k_847(ade20k_full_object_ids(rgb[..., :3] if rgb.ndim == 3 else rgb), ade847_id_map)
    if name == "pascal_context_59":
        return convert_pascal_context_59(read_pascal_context_mat(path))
    if name == "pascal_context_459":
        return convert_pascal_context_459(read_pascal_context_mat(path))
    if name == "pascal_voc_20":
        return convert_pascal_voc_20(_read_png(path))
    raise ValueError(f"Unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}.")


def encode_label_png(label: np.ndarray) -> bytes:
    """Lossless PNG bytes of a label map: mode "L" for uint8, 16-bit grayscale ("I;16") for uint16."""
    from PIL import Image

    if label.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"label maps must be uint8 or uint16, got {label.dtype}.")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label)).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_example(spec: BenchmarkSpec, sample: ReleaseSample, label: np.ndarray) -> tuple[dict, np.ndarray]:
    """Image bytes (original file unless the official script resizes / re-encodes) and the label to store."""
    from PIL import Image

    if spec.max_short_side is None:
        return {"bytes": sample.image_path.read_bytes(), "path": sample.image_path.name}, label
    # the official script resizes (short side -> 512 when longer; image bilinear, label nearest) and saves
    # every image again with PIL's JPEG defaults (quality 75), resized or not. Done the same way here.
    with Image.open(sample.image_path) as image:
        array = np.asarray(image if image.mode in ("RGB", "L") else image.convert("RGB"))
    size = official_resized_size(array.shape[0], array.shape[1], spec.max_short_side)
    if size is not None:
        array = resize_image_bilinear(array, size)
        label = resize_label_nearest(label, size)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return {"bytes": buffer.getvalue(), "path": sample.image_path.name}, label


def _generate_examples(
    name: str,
    samples: tuple[ReleaseSample, ...],
    split: str,
    max_images: int | None,
    ade847_id_map: Mapping[int, int] | None,
) -> Iterator[dict[str, Any]]:
    spec = BENCHMARKS[name]
    kept = 0
    for sample in samples:
        if max_images is not None and kept >= max_images:
            return
        label = convert_release_label(name, sample.label_path, split, ade847_id_map)
        image, label = _image_example(spec, sample, label)
        if spec.drop_all_ignore and is_all_ignore(label, spec.ignore_index):
            logger.info("dropping %s: its label map is all ignore (%d)", sample.file_name, spec.ignore_index)
            continue
        kept += 1
        yield {"image": image, "label": {"bytes": encode_label_png(label), "path": None}, "file_name": sample.file_name}


def benchmark_features(name: str):
    """`datasets.Features` of a converted benchmark: `image` (RGB), `label` (8-bit "L" or 16-bit), `file_name`."""
    import datasets

    spec = get_benchmark(name)
    label_mode = "L" if spec.label_bits == 8 else None  # 16-bit maps decode as "I;16" (no conversion)
    return datasets.Features(
        {
            "image": datasets.Image(mode="RGB"),
            "label": datasets.Image(mode=label_mode),
            "file_name": datasets.Value("string"),
        }
    )


def benchmark_metadata(name: str) -> dict[str, Any]:
    """JSON-serialisable description of a benchmark (stored with the converted dataset)."""
    spec = get_benchmark(name)
    return {
        "benchmark": spec.name,
        "display_name": spec.display_name,
        "vocabulary": spec.vocabulary,
        "num_classes": spec.num_classes,
        "ignore_index": spec.ignore_index,
        "label_bits": spec.label_bits,
        "setting": spec.setting,
        "unseen_classes": spec.unseen_classes(),
        "paper_results": dict(spec.paper_results),
        "paper_results_source": spec.paper_results_source,
        "released_checkpoint_results": dict(spec.released_checkpoint_results),
    }


def _fingerprint(name: str, split: str, samples: Sequence[ReleaseSample], max_images, ade847_id_map) -> str:
    digest = hashlib.sha256(f"{CONVERSION_VERSION}|{name}|{split}|{max_images}".encode())
    for sample in samples:
        for path in (sample.image_path, sample.label_path):
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    if ade847_id_map is not None:
        digest.update(json.dumps(sorted(ade847_id_map.items())).encode())
    return digest.hexdigest()[:32]


def build_benchmark_dataset(
    name: str,
    data_root: str | os.PathLike,
    split: str = "validation",
    max_images: int | None = None,
    ade847_id_map: Mapping[int, int] | str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """One split of an official release as a `datasets.Dataset` with columns `image`, `label`, `file_name`.

    `max_images` keeps the first N images (by file name) that survive the all-ignore filter; `ade847_id_map` is the
    A-847 table or a file for [`load_ade20k_847_id_map`]; `cache_dir` is the `datasets` cache of the Arrow files.
    The label feature carries the class names and [`benchmark_metadata`] ([`~maft_hf.data.labels.get_class_names`]).
    """
    import datasets

    spec = get_benchmark(name)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}.")
    if name == "ade20k_847":
        if ade847_id_map is None:
            raise ValueError("ade20k_847 needs `ade847_id_map` (see load_ade20k_847_id_map for the file formats).")
        if not isinstance(ade847_id_map, Mapping):
            ade847_id_map = load_ade20k_847_id_map(ade847_id_map, spec.class_names())
    samples = find_release_samples(name, data_root, split, split_file=split_file, label_dir=label_dir)
    features = features_with_class_names(
        benchmark_features(name), spec.class_names(), benchmark=benchmark_metadata(name)
    )
    dataset = datasets.Dataset.from_generator(
        _generate_examples,
        features=features,
        gen_kwargs={
            "name": name,
            "samples": tuple(samples),
            "split": split,
            "max_images": max_images,
            "ade847_id_map": None if ade847_id_map is None else dict(ade847_id_map),
        },
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        fingerprint=_fingerprint(name, split, samples, max_images, ade847_id_map),
    )
    dataset.info.description = f"{spec.display_name} ({split}) for MAFT."
    return dataset


__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "IGNORE_16BIT",
    "IGNORE_8BIT",
    "PASCAL_CONTEXT_59_ALIASES",
    "RELEASE_LAYOUTS",
    "ReleaseSample",
    "ade20k_full_object_ids",
    "benchmark_features",
    "benchmark_metadata",
    "build_benchmark_dataset",
    "convert_ade20k_150",
    "convert_ade20k_847",
    "convert_coco_stuff",
    "convert_pascal_context_459",
    "convert_pascal_context_59",
    "convert_pascal_voc_20",
    "convert_release_label",
    "encode_label_png",
    "find_release_samples",
    "get_benchmark",
    "is_all_ignore",
    "load_ade20k_847_id_map",
    "official_resized_size",
    "pascal_context_59_ids",
    "read_pascal_context_mat",
    "resize_image_bilinear",
    "resize_label_nearest",
]
