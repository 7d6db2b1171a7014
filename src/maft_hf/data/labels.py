"""Label maps and the class names a dataset carries: as JSON in the label feature's `id`
([`features_with_class_names`]), which, unlike `DatasetInfo.description`, survives `save_to_disk`, parquet and the Hub."""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference.vocabulary import load_vocabulary, unseen_class_indices

IGNORE_INDEX = 255
COCO_STUFF_NUM_RAW_IDS = 182
COCO_STUFF_UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
CLASS_NAMES_MARKER = "maft_hf_class_names="  # description line of datasets written before features metadata
BENCHMARK_MARKER = "maft_hf_benchmark="
METADATA_KEY = "maft_hf"  # {"maft_hf": {"class_names": [...], "benchmark": {...}}} in a feature's `id`
ID2LABEL_FILE = "id2label.json"


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def coco_stuff_lut(ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """`(256,)` lookup table raw COCO-Stuff value (COCO id - 1) -> contiguous id 0..170, unused values -> ignore."""
    if not 0 <= ignore_index <= 65535:
        raise ValueError(f"ignore_index must be in [0, 65535], got {ignore_index}.")
    used = [v for v in range(COCO_STUFF_NUM_RAW_IDS) if v not in COCO_STUFF_UNUSED_RAW_IDS]
    lut = np.full(256, ignore_index, dtype=np.uint8 if ignore_index <= 255 else np.uint16)
    lut[used] = np.arange(len(used))
    return lut


def coco_stuff_unseen_ids() -> list[int]:
    """Contiguous ids of the 15 unseen classes of the zero-shot COCO-Stuff split (paper Tab. 1)."""
    return unseen_class_indices("coco_stuff")


def label_map_array(label: Any, what: str = "Label maps") -> np.ndarray:
    """A label map (PIL image, array, tensor, nested list or `{"bytes"}` / `{"path"}` cell) as `(H, W)` integer ids
    (exactly the stored ids: uint8 or uint16); `ValueError` for non-integer values and other shapes."""
    from PIL import Image

    if isinstance(label, dict) and (label.get("bytes") is not None or label.get("path")):
        with Image.open(io.BytesIO(label["bytes"]) if label.get("bytes") is not None else label["path"]) as opened:
            label = opened.copy()
    mode = getattr(label, "mode", None)
    array = _numpy(label)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype.kind not in "iub":
        raise ValueError(f"{what} must hold integer class ids, got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(
            f"{what} must be single-channel (H, W) class-id maps, got shape {array.shape}"
            f"{f' (PIL mode {mode!r})' if mode else ''}; a colour (palette-rendered) annotation must be converted to "
            "class ids first (maft-prepare-benchmark)."
        )
    return array


def map_labels(label_array, lut, what: str = "label map"):
    """`lut[v]` for every value of an integer label map (NumPy or torch, same type out); `ValueError` names values
    outside `[0, len(lut))`."""
    values, table = _numpy(label_array), _numpy(lut)
    if values.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integers, got dtype {values.dtype}.")
    outside = (values < 0) | (values >= len(table))
    if outside.any():
        bad = np.unique(values[outside])[:20].tolist()
        raise ValueError(f"{what} holds ids {bad} outside the lookup table's range [0, {len(table) - 1}].")
    if isinstance(label_array, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(table[values])).to(label_array.device)
    return table[values]


def zero_shot_ignore(labels, unseen_ids, ignore_index: int = IGNORE_INDEX):
    """A copy of `labels` (array or tensor) with the pixels of the unseen classes set to `ignore_index`."""
    unseen = sorted({int(i) for i in unseen_ids})
    if isinstance(labels, torch.Tensor):
        hidden = torch.isin(labels, torch.tensor(unseen, dtype=labels.dtype, device=labels.device))
        return labels.masked_fill(hidden, ignore_index)
    out = np.array(labels, copy=True)
    out[np.isin(out, unseen)] = ignore_index
    return out


def check_label_ids(labels, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise a `ValueError` naming every id of `labels` outside `[0, num_classes)` other than `ignore_index`."""
    bad = [v.item() for v in np.unique(_numpy(labels)) if v != ignore_index and not 0 <= v < num_classes]
    if bad:
        raise ValueError(
            f"Label ids must lie in [0, {num_classes - 1}] or be the ignore index {ignore_index}; found "
            f"{len(bad)} other id(s): {bad[:20]}{' ...' if len(bad) > 20 else ''}."
        )


def features_with_class_names(features, class_names, label_column: str = "label", benchmark: dict | None = None):
    """A copy of `features` whose `label_column` carries the class names (and benchmark metadata) in its `id`."""
    if label_column not in features:
        raise ValueError(f"The features have no label column {label_column!r}; they have {list(features)}.")
    out = copy.deepcopy(features)
    stored = {"class_names": list(class_names), **({"benchmark": benchmark} if benchmark else {})}
    out[label_column].id = json.dumps({METADATA_KEY: stored})
    return out


def dataset_info_with_class_names(class_names, description: str = "", features=None):
    """A `datasets.DatasetInfo` whose description records `class_names` (the older place, still read)."""
    from datasets import DatasetInfo

    text = description.rstrip()
    text = (text + "\n" if text else "") + CLASS_NAMES_MARKER + json.dumps(list(class_names))
    return DatasetInfo(description=text, features=features)


def _first_split(dataset):
    if getattr(dataset, "info", None) is None and hasattr(dataset, "values"):  # a DatasetDict
        return next(iter(dataset.values()), None)
    return dataset


def dataset_metadata(dataset) -> dict:
    """`{"class_names": [...], "benchmark": {...}}` (either may be missing) from a feature's `id`, else from the
    description lines of older datasets."""
    dataset = _first_split(dataset)
    found: dict = {}
    for feature in (getattr(dataset, "features", None) or {}).values():
        try:
            stored = json.loads(getattr(feature, "id", None) or "null")
        except json.JSONDecodeError:
            continue
        if isinstance(stored, dict) and isinstance(stored.get(METADATA_KEY), dict):
            found = dict(stored[METADATA_KEY])
            break
    info = getattr(dataset, "info", None)
    for line in ((info.description or "") if info is not None else "").splitlines():
        for key, marker in (("class_names", CLASS_NAMES_MARKER), ("benchmark", BENCHMARK_MARKER)):
            if line.startswith(marker) and key not in found:
                found[key] = json.loads(line[len(marker) :])
    return found


def read_id2label(path: str | os.PathLike) -> list[str]:
    """Class names from an `id2label.json` (`{"0": name, ..., "C-1": name}`), checked."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read {path}: {err}") from err
    expected = [str(i) for i in range(len(data))] if isinstance(data, dict) else None
    if expected is None or sorted(data, key=lambda k: (len(k), k)) != expected:
        shown = list(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a JSON object with the keys '0'..'C-1' (id -> class name), got {shown}.")
    return load_vocabulary([data[key] for key in expected])


def get_class_names(dataset, data_dir: str | os.PathLike | None = None) -> list[str] | None:
    """The class names of a dataset (or the first split of a `DatasetDict`), or None: from [`dataset_metadata`], else
    an `id2label.json` in `data_dir` or beside the dataset's Arrow files."""
    names = dataset_metadata(dataset).get("class_names")
    if names is not None:
        return list(names)
    folders = [Path(data_dir)] if data_dir is not None else []
    for cache in getattr(_first_split(dataset), "cache_files", None) or []:
        folders += [Path(cache["filename"]).parent, Path(cache["filename"]).parent.parent]
    return next((read_id2label(f / ID2LABEL_FILE) for f in folders if (f / ID2LABEL_FILE).is_file()), None)
