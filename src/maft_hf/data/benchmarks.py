"""The MAFT benchmarks ([`BENCHMARKS`]) and the conversion of each official release into a `datasets.Dataset`
(`convert_*` follow the released `datasets/prepare_*.py`). Label maps are lossless PNGs: 8-bit "L" (ignore 255) or
16-bit "I;16" (ignore 65535: A-847, PC-459)."""

from __future__ import annotations

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
import torch

from ..inference.vocabulary import load_vocabulary
from .labels import (
    coco_stuff_lut,
    coco_stuff_unseen_ids,
    features_with_class_names,
    label_map_array,
    map_labels,
    zero_shot_ignore,
)
from .safe_pickle import load_plain_pickle
from .transforms import resize_image

logger = logging.getLogger(__name__)

IGNORE_8BIT = 255
IGNORE_16BIT = 65535
CONVERSION_VERSION = "2"  # part of the dataset fingerprint: bump when a conversion changes

SPLITS = ("validation", "train")


@dataclass(frozen=True, eq=False)
class BenchmarkSpec:
    """One benchmark. `drop_all_ignore`: all-ignore images are not written (official COCO / VOC scripts);
    `paper_results`: FreeSeg + MAFT, ViT-B/16, percent; `released_checkpoint_results`: the authors' README."""

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

    def class_names(self) -> list[str]:
        return load_vocabulary(self.vocabulary)

    def unseen_classes(self) -> list[int]:
        return [] if self.unseen_vocabulary is None else sorted(coco_stuff_unseen_ids())

    def seen_classes(self) -> list[int]:
        unseen = set(self.unseen_classes())
        return [i for i in range(self.num_classes) if i not in unseen]


_TAB3 = "paper Tab. 3 (open-vocabulary, trained on COCO-Stuff 171), FreeSeg + MAFT, ViT-B/16"


def _spec(name, display_name, num_classes, label_bits=8, setting="open_vocabulary", vocabulary=None, **kwargs):
    ignore = IGNORE_8BIT if label_bits == 8 else IGNORE_16BIT
    return BenchmarkSpec(name, display_name, vocabulary or name, num_classes, ignore, label_bits, setting, **kwargs)


def _open_vocabulary(name, display_name, num_classes, paper, released, frozen, vit_l, rn50, **kwargs):
    rows = {
        "FreeSeg, frozen CLIP ViT-B/16 (Tab. 3)": {"mIoU": frozen},
        "FreeSeg + MAFT, CLIP ViT-L/14 (Tab. 6)": {"mIoU": vit_l},
        "FreeSeg + MAFT, CLIP RN50 (Tab. 6)": {"mIoU": rn50},
    }
    results = {"paper_results": {"mIoU": paper}, "released_checkpoint_results": {"mIoU": released}}
    return _spec(
        name, display_name, num_classes, paper_results_source=_TAB3, other_paper_results=rows, **results, **kwargs
    )


_ZERO_SHOT_ROWS = {  # mIoU_seen, mIoU_unseen, hIoU[, mIoU]
    "FreeSeg, frozen CLIP (Tab. 1)": (42.4, 42.2, 42.3),
    "FreeSeg + MAFT without ensemble (Tab. 2)": (40.1, 49.7, 44.4),
    "FreeSeg, frozen CLIP, without ensemble (Tab. 2)": (22.3, 29.3, 25.3),
    "SAM-H + MAFT (Tab. 5a)": (43.4, 51.5, 47.1, 44.1),
    "Upper bound, S_IoU instead of A^c (Tab. 7)": (77.2, 82.1, 79.6, 77.6),
}
_ZERO_SHOT_METRICS = ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU")

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "coco_stuff_171", "COCO-Stuff-171", 171, drop_all_ignore=True,
            paper_results_source="none: the training set of the open-vocabulary setting; the paper reports no score on it",
        ),
        _spec(
            "coco_stuff_zero_shot", "COCO-Stuff (156 seen / 15 unseen)", 171, setting="zero_shot",
            vocabulary="coco_stuff_171", unseen_vocabulary="coco_stuff_unseen_15", drop_all_ignore=True,
            paper_results=dict(zip(_ZERO_SHOT_METRICS, (43.3, 50.4, 46.5, 43.9))),
            paper_results_source=(
                "paper Tab. 1 (mIoU_seen, mIoU_unseen, hIoU) and Tab. 7 / 8 (mIoU over all 171 classes), "
                "FreeSeg + MAFT, ViT-B/16, with the ensemble of Eq. 9"
            ),
            other_paper_results={row: dict(zip(_ZERO_SHOT_METRICS, v)) for row, v in _ZERO_SHOT_ROWS.items()},
        ),
        _open_vocabulary("ade20k_150", "A-150", 150, 29.1, 29.14, 17.9, 32.0, 27.0),
        _open_vocabulary("ade20k_847", "A-847", 847, 10.1, 10.25, 7.1, 12.1, 8.4, label_bits=16, max_short_side=512),
        _open_vocabulary("pascal_context_59", "PC-59", 59, 53.5, 53.33, 34.4, 58.5, 50.8),
        _open_vocabulary("pascal_context_459", "PC-459", 459, 12.8, 12.85, 6.4, 15.7, 9.9, label_bits=16),
        _open_vocabulary("pascal_voc_20", "PAS-20", 20, 90.0, 90.44, 85.6, 92.1, 89.0, drop_all_ignore=True),
    )
}  # fmt: skip


def get_benchmark(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}.")
    return BENCHMARKS[name]


def _convert(raw: Any, lut: np.ndarray, what: str) -> np.ndarray:
    return map_labels(label_map_array(raw, what), lut, what)


def _shifted_lut(size: int, num_classes: int, ignore_index: int) -> np.ndarray:
    """`(size,)` table: raw ids 1..num_classes -> 0..num_classes - 1, every other value -> `ignore_index`."""
    lut = np.full(size, ignore_index, dtype=np.uint8 if ignore_index == IGNORE_8BIT else np.uint16)
    lut[1 : num_classes + 1] = np.arange(num_classes)
    return lut


def convert_coco_stuff(raw: Any) -> np.ndarray:
    """COCO-Stuff `stuffthingmaps` -> uint8 ids 0..170, the rest -> 255."""
    return _convert(raw, coco_stuff_lut(IGNORE_8BIT), "COCO-Stuff label")


def convert_ade20k_150(raw: Any) -> np.ndarray:
    """ADEChallengeData2016 PNG -> uint8 ids: 0 -> 255, v -> v - 1; values above 150 raise `ValueError`."""
    return _convert(raw, _shifted_lut(151, 150, IGNORE_8BIT), "ADE20K-150 label")


def convert_pascal_context_459(label_map: Any) -> np.ndarray:
    """PASCAL-Context `LabelMap` (1..459, 0 = unlabelled) -> uint16 ids: 0 -> 65535, v -> v - 1."""
    return _convert(label_map, _shifted_lut(460, 459, IGNORE_16BIT), "PASCAL-Context label")


def convert_pascal_voc_20(raw: Any) -> np.ndarray:
    """VOC2012 `SegmentationClass` palette indices -> uint8 ids: 1..20 -> 0..19, everything else -> 255."""
    return _convert(raw, _shifted_lut(256, 20, IGNORE_8BIT), "VOC label")


PASCAL_CONTEXT_59_ALIASES = {"diningtable": "table"}


def pascal_context_59_ids() -> np.ndarray:
    """The 60 increasing ids of the official PC-59 `_mapping`: 0 and the 459-scheme id (line + 1) of each class."""
    names_459 = BENCHMARKS["pascal_context_459"].class_names()
    names = [PASCAL_CONTEXT_59_ALIASES.get(name, name) for name in BENCHMARKS["pascal_context_59"].class_names()]
    return np.array([0] + [names_459.index(name) + 1 for name in names], dtype=np.int64)


def convert_pascal_context_59(label_map: Any) -> np.ndarray:
    """PASCAL-Context 459-scheme ids -> uint8 PC-59 ids: the 59 classes -> 0..58, everything else -> 255."""
    lut = np.full(460, IGNORE_8BIT, dtype=np.uint8)
    lut[pascal_context_59_ids()[1:]] = np.arange(59)
    return _convert(label_map, lut, "PASCAL-Context label")


def ade20k_full_object_ids(seg_rgb: Any) -> np.ndarray:
    """Object ids `(R // 10) * 256 + G` of an ADE20K full `*_seg.png` `(H, W, 3)` (0 = unlabelled)."""
    seg = np.asarray(seg_rgb)
    if seg.ndim != 3 or seg.shape[2] < 2:
        raise ValueError(f"expected an (H, W, 3) RGB _seg.png array, got shape {seg.shape}.")
    return (seg[..., 0].astype(np.int32) // 10) * 256 + seg[..., 1].astype(np.int32)


def convert_ade20k_847(object_ids: Any, id_to_train_id: Mapping[int, int]) -> np.ndarray:
    """ADE20K object ids -> uint16 A-847 train ids through `id_to_train_id`; other ids -> 65535."""
    ids = label_map_array(object_ids, "ADE20K object-id map")
    values, inverse = np.unique(ids, return_inverse=True)
    train_ids = np.array([id_to_train_id.get(int(v), IGNORE_16BIT) for v in values], dtype=np.uint16)
    return train_ids[inverse].reshape(ids.shape)


def load_ade20k_index(path: str | os.PathLike) -> dict:
    """The release's `index_ade20k.pkl`, read as plain data only (never runs code); it must hold `objectnames`."""
    try:
        with open(path, "rb") as f:
            index = load_plain_pickle(f)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a plain-data ADE20K index pickle: {err}") from err
    if not isinstance(index, Mapping) or "objectnames" not in index:
        raise ValueError(f"{path}: expected the ADE20K index (a dict with an 'objectnames' list).")
    return dict(index)


def _read_id_name_rows(path: Path) -> list[tuple]:
    """`(object id, name, trainId or None)` rows of an A-847 id table file, as read."""
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return [(i + 1, name, None) for i, name in enumerate(load_ade20k_index(path)["objectnames"])]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, Mapping):
            return [(object_id, name, None) for object_id, name in data.items()]
        return [(e["id"], e["name"], e.get("trainId", e.get("train_id"))) for e in data]
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="," if suffix == ".csv" else "\t")
        lines = [line for line in reader if line and line[0].strip().lstrip("-").isdigit()]  # no header, comment
    short = [line for line in lines if len(line) < 2]
    if short:
        raise ValueError(f"{path}: expected rows 'id<sep>name[<sep>trainId]', got {short[0]!r}.")
    return [(line[0], line[1], line[2] if len(line) > 2 and line[2].strip() else None) for line in lines]


def load_ade20k_847_id_map(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> dict[int, int]:
    """The ADE20K object id -> A-847 train id table from a local file, matched to the 847 names.

    Accepted: `.json` (list of `{"id", "name"[, "trainId"]}` or `{"<id>": "<name>"}`), `.csv` / `.tsv` / `.txt` rows
    `id, name[, trainId]`, or the release's `index_ade20k.pkl` (id = position in `objectnames` + 1). Unknown names are
    skipped; two ids for one name raise `ValueError`; names without an id are logged (their pixels become 65535)."""
    names = list(class_names) if class_names is not None else BENCHMARKS["ade20k_847"].class_names()
    train_id_of_name = {name: i for i, name in enumerate(names)}
    table: dict[int, int] = {}
    id_of_name: dict[str, int] = {}
    for object_id, name, train_id in _read_id_name_rows(Path(path)):
        object_id, name, train_id = int(object_id), str(name).strip(), None if train_id is None else int(train_id)
        if name not in train_id_of_name:
            continue
        expected = train_id_of_name[name]
        if train_id is not None and train_id != expected:
            raise ValueError(f"{path}: {name!r} has trainId {train_id} but is class {expected} of the 847 names.")
        if id_of_name.setdefault(name, object_id) != object_id:
            raise ValueError(
                f"{path}: class {name!r} is named by object ids {id_of_name[name]} and {object_id}; the official "
                "table maps one id per class: keep one of them."
            )
        table[object_id] = expected
    missing = [name for name in names if name not in id_of_name]
    if missing:
        msg = "%d of the %d A-847 class names have no object id in %s (their pixels become 65535), e.g. %s"
        logger.warning(msg, len(missing), len(names), path, missing[:5])
    return table


def read_pascal_context_mat(path: str | os.PathLike) -> np.ndarray:
    """The `LabelMap` `(H, W)` of a PASCAL-Context `trainval/<id>.mat` file (needs `scipy`)."""
    try:
        from scipy.io import loadmat
    except ImportError as error:
        msg = "Reading PASCAL-Context .mat files needs scipy, which is not installed: `pip install scipy`."
        raise ImportError(msg) from error
    content = loadmat(os.fspath(path))
    if "LabelMap" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise ValueError(f"{path}: no 'LabelMap' variable (found {found}).")
    return np.asarray(content["LabelMap"])


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
    """Bilinear resize of a uint8 `(H, W[, C])` image with OpenCV `INTER_LINEAR` geometry (no antialiasing)."""
    array = np.asarray(image)
    resized = resize_image(torch.tensor(np.atleast_3d(array)).permute(2, 0, 1), size, antialias=False)
    return resized.permute(1, 2, 0).numpy().reshape(*size, *array.shape[2:])


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


class ReleaseSample(NamedTuple):
    file_name: str
    image_path: Path
    label_path: Path


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"missing {what} folder {path}.")
    return path


def _find_release_samples(
    name: str,
    data_root: str | os.PathLike,
    split: str = "validation",
    split_file: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
) -> list[ReleaseSample]:
    """The images of one split of a release ([`RELEASE_LAYOUTS`] under `data_root`), sorted by file name.
    `split_file` (PASCAL-Context / VOC) replaces the `ImageSets` list; `label_dir` (VOC) the label folder."""
    root, validation = Path(data_root), split == "validation"
    folder = "validation" if validation else "training"
    if name == "ade20k_847":
        images = _require_dir(root / "ade" / "ADE20K_2021_17_01" / "images" / "ADE" / folder, "ADE20K image")
        images = sorted(images.rglob("*.jpg"), key=lambda p: p.name)
        samples = [ReleaseSample(p.stem, p, p.with_name(f"{p.stem}_seg.png")) for p in images]
    elif name.startswith("pascal"):  # an image-id list
        context = name.startswith("pascal_context")
        base = root / "VOCdevkit" / ("VOC2010" if context else "VOC2012")
        image_sets = base / "ImageSets" / ("Main" if context else "Segmentation")
        id_list = Path(split_file or image_sets / f"{'val' if validation else 'train'}.txt")
        if not id_list.is_file():
            raise FileNotFoundError(f"missing image list {id_list}.")
        ids = sorted(line.split()[0] for line in id_list.read_text(encoding="utf-8").splitlines() if line.strip())
        labels = base / "trainval" if context else Path(label_dir or base / "SegmentationClass")
        suffix = "mat" if context else "png"
        samples = [ReleaseSample(i, base / "JPEGImages" / f"{i}.jpg", labels / f"{i}.{suffix}") for i in ids]
    else:  # one PNG per image, images beside
        if name == "ade20k_150":
            base = root / "ade" / "ADEChallengeData2016"
            labels = _require_dir(base / "annotations" / folder, "ADE20K-150 annotation")
            images = _require_dir(base / "images" / folder, "ADE20K-150 image")
        else:
            folder = "val2017" if validation else "train2017"
            labels = _require_dir(root / "coco" / "stuffthingmaps" / folder, "COCO-Stuff label")
            images = _require_dir(root / "coco" / folder, "COCO image")
        samples = [ReleaseSample(p.stem, images / f"{p.stem}.jpg", p) for p in sorted(labels.glob("*.png"))]
    missing = [s for s in samples if not s.image_path.is_file() or not s.label_path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(samples)} {name} images lack their image or label file, e.g. "
            f"{missing[0].image_path} / {missing[0].label_path}."
        )
    if not samples:
        layout = next(text for key, text in RELEASE_LAYOUTS.items() if name.startswith(key))
        raise FileNotFoundError(f"no {name} images found for split {split!r} under {root}; expected:\n{layout}")
    return samples


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image)


_LABEL_CONVERTERS = {  # benchmark -> (label file reader, converter); ade20k_847 also needs its id table
    "coco_stuff_171": (_read_png, convert_coco_stuff),
    "coco_stuff_zero_shot": (_read_png, convert_coco_stuff),
    "ade20k_150": (_read_png, convert_ade20k_150),
    "ade20k_847": (_read_png, ade20k_full_object_ids),
    "pascal_context_59": (read_pascal_context_mat, convert_pascal_context_59),
    "pascal_context_459": (read_pascal_context_mat, convert_pascal_context_459),
    "pascal_voc_20": (_read_png, convert_pascal_voc_20),
}


def _convert_release_label(
    name: str, label_path: str | os.PathLike, split: str = "validation", ade847_id_map: Mapping[int, int] | None = None
) -> np.ndarray:
    """One release label file converted to the benchmark's ids (`coco_stuff_zero_shot` train: unseen -> 255)."""
    read, convert = _LABEL_CONVERTERS[get_benchmark(name).name]
    label = convert(read(Path(label_path)))
    if name == "ade20k_847":
        return convert_ade20k_847(label, ade847_id_map)
    if name == "coco_stuff_zero_shot" and split == "train":
        return zero_shot_ignore(label, BENCHMARKS[name].unseen_classes(), IGNORE_8BIT)
    return label


def encode_label_png(label: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 ("L") or uint16 ("I;16") label map."""
    from PIL import Image

    if label.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"label maps must be uint8 or uint16, got {label.dtype}.")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label)).save(buffer, format="PNG")
    return buffer.getvalue()


def _generate_examples(name, samples, split, max_images, ade847_id_map) -> Iterator[dict[str, Any]]:
    from PIL import Image

    spec = BENCHMARKS[name]
    kept = 0
    for sample in samples:
        if max_images is not None and kept >= max_images:
            return
        label = _convert_release_label(name, sample.label_path, split, ade847_id_map)
        if spec.max_short_side is None:
            image = sample.image_path.read_bytes()
        else:  # the official script resizes and re-saves every image with PIL's JPEG defaults, resized or not
            with Image.open(sample.image_path) as opened:
                array = np.asarray(opened if opened.mode in ("RGB", "L") else opened.convert("RGB"))
            size = official_resized_size(array.shape[0], array.shape[1], spec.max_short_side)
            if size is not None:
                array, label = resize_image_bilinear(array, size), resize_label_nearest(label, size)
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG")
            image = buffer.getvalue()
        if spec.drop_all_ignore and np.all(label == spec.ignore_index):
            logger.info("dropping %s: its label map is all ignore (%d)", sample.file_name, spec.ignore_index)
            continue
        kept += 1
        yield {
            "image": {"bytes": image, "path": sample.image_path.name},
            "label": {"bytes": encode_label_png(label), "path": None},
            "file_name": sample.file_name,
        }


def benchmark_features(name: str):
    """`datasets.Features`: `image` (RGB), `label` (8-bit "L", or 16-bit decoded as "I;16"), `file_name`."""
    from datasets import Features, Image, Value

    label_mode = "L" if get_benchmark(name).label_bits == 8 else None
    return Features({"image": Image(mode="RGB"), "label": Image(mode=label_mode), "file_name": Value("string")})


def benchmark_metadata(name: str) -> dict[str, Any]:
    """JSON-serialisable description of a benchmark (stored with the converted dataset)."""
    spec = get_benchmark(name)
    keys = ("display_name", "vocabulary", "num_classes", "ignore_index", "label_bits", "setting")
    return {
        "benchmark": spec.name,
        **{key: getattr(spec, key) for key in keys},
        "unseen_classes": spec.unseen_classes(),
        "paper_results": dict(spec.paper_results),
        "paper_results_source": spec.paper_results_source,
        "released_checkpoint_results": dict(spec.released_checkpoint_results),
    }


def _fingerprint(name, split, samples, max_images, ade847_id_map) -> str:
    digest = hashlib.sha256(f"{CONVERSION_VERSION}|{name}|{split}|{max_images}".encode())
    for path in (path for sample in samples for path in (sample.image_path, sample.label_path)):
        digest.update(f"{path}|{path.stat().st_size}|{path.stat().st_mtime_ns}".encode())
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
    """One split of an official release as a `datasets.Dataset` (`image`, `label`, `file_name`); the label feature
    carries the class names and [`benchmark_metadata`]. `max_images` keeps the first N images (by file name) that
    survive the all-ignore filter; `ade847_id_map` is the A-847 table or a file for [`load_ade20k_847_id_map`]."""
    import datasets

    spec = get_benchmark(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}.")
    if name == "ade20k_847" and ade847_id_map is None:
        raise ValueError("ade20k_847 needs `ade847_id_map` (see load_ade20k_847_id_map for the file formats).")
    if name == "ade20k_847" and not isinstance(ade847_id_map, Mapping):
        ade847_id_map = load_ade20k_847_id_map(ade847_id_map, spec.class_names())
    samples = _find_release_samples(name, data_root, split, split_file=split_file, label_dir=label_dir)
    metadata = benchmark_metadata(name)
    features = features_with_class_names(benchmark_features(name), spec.class_names(), benchmark=metadata)
    id_map = None if ade847_id_map is None else dict(ade847_id_map)
    dataset = datasets.Dataset.from_generator(
        _generate_examples,
        features=features,
        gen_kwargs=dict(name=name, samples=tuple(samples), split=split, max_images=max_images, ade847_id_map=id_map),
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        fingerprint=_fingerprint(name, split, samples, max_images, id_map),
    )
    dataset.info.description = f"{spec.display_name} ({split}) for MAFT."
    return dataset
