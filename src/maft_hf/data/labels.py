"""Label-id conventions: class vocabularies, the COCO-Stuff raw-to-contiguous mapping, zero-shot ignoring and checks.

COCO-Stuff (see `vocab/README.md`): a raw `stuffthingmaps` PNG value is the 1-based COCO id minus 1, i.e. 0..181, of
which 11 values are unused (`COCO_STUFF_UNUSED_RAW_IDS`); the remaining 171 values map in increasing order to the
contiguous ids 0..170 of `vocab/coco_stuff_171.txt`; every other value (255 = unlabelled, the unused ids) becomes 255.

Datasets written by this package carry their class names in `DatasetInfo.description` (see
[`dataset_info_with_class_names`] and [`get_class_names`]).
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import torch

from ..inference.vocabulary import load_vocabulary

IGNORE_INDEX = 255
COCO_STUFF_NUM_RAW_IDS = 182
COCO_STUFF_UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
CLASS_NAMES_MARKER = "maft_hf_class_names="


def _unseen_table_rows() -> list[list[str]]:
    text = (resources.files("maft_hf") / "vocab" / "coco_stuff_unseen_15.txt").read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def coco_stuff_lut(ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Lookup table from raw COCO-Stuff `stuffthingmaps` values to contiguous ids.

    Returns:
        `(256,)` uint8 array (uint16 when `ignore_index > 255`): `lut[raw]` is the contiguous id 0..170 for the 171 used raw values (0..181 minus
        `COCO_STUFF_UNUSED_RAW_IDS`, in increasing order) and `ignore_index` for every other value.
    """
    used = [v for v in range(COCO_STUFF_NUM_RAW_IDS) if v not in COCO_STUFF_UNUSED_RAW_IDS]
    names = load_vocabulary("coco_stuff_171")
    if len(used) != len(names):
        raise ValueError(f"COCO-Stuff has {len(names)} class names but {len(used)} used raw ids.")
    dtype = np.uint8 if 0 <= ignore_index <= 255 else np.uint16
    if not 0 <= ignore_index <= 65535:
        raise ValueError(f"ignore_index must be in [0, 65535], got {ignore_index}.")
    lut = np.full(256, ignore_index, dtype=dtype)
    lut[used] = np.arange(len(used), dtype=dtype)
    return lut


def coco_stuff_unseen_ids() -> list[int]:
    """Contiguous ids (0..170) of the 15 unseen classes of the zero-shot COCO-Stuff split (paper Tab. 1).

    Read from `vocab/coco_stuff_unseen_15.txt` (the same ids as `maft_hf.inference.vocabulary.unseen_class_indices()`); each
    row's raw PNG value and name are checked against [`coco_stuff_lut`] and `coco_stuff_171.txt`.
    """
    lut = coco_stuff_lut()
    names = load_vocabulary("coco_stuff_171")
    ids = []
    for row in _unseen_table_rows():
        index, _coco_id, raw, name = (column.strip() for column in row)
        index, raw = int(index), int(raw)
        if lut[raw] != index or names[index] != name:
            raise ValueError(f"Inconsistent unseen-class row {row}: lut[{raw}]={lut[raw]}, name {names[index]!r}.")
        ids.append(index)
    return ids


def map_labels(label_array, lut):
    """Map every value `v` of a label map to `lut[v]`.

    Args:
        label_array: integer `np.ndarray` or `torch.Tensor` of any shape (e.g. `(H, W)` raw PNG values).
        lut: 1-D `np.ndarray` or `torch.Tensor`; `len(lut)` must exceed the largest value in `label_array`.

    Returns:
        Same type (numpy in, numpy out; torch in, torch out, on the input's device) and shape, dtype of `lut`.
    """
    is_torch = isinstance(label_array, torch.Tensor)
    values = label_array.detach().cpu().numpy() if is_torch else np.asarray(label_array)
    table = lut.detach().cpu().numpy() if isinstance(lut, torch.Tensor) else np.asarray(lut)
    if table.ndim != 1:
        raise ValueError(f"lut must be 1-D, got shape {table.shape}.")
    if values.dtype.kind not in "iu":
        raise ValueError(f"label_array must hold integers, got dtype {values.dtype}.")
    if values.size and (values.min() < 0 or values.max() >= len(table)):
        raise ValueError(
            f"label values must lie in [0, {len(table) - 1}] for a lut of {len(table)} entries, got values in "
            f"[{values.min()}, {values.max()}]."
        )
    mapped = table[values]
    if is_torch:
        return torch.from_numpy(np.ascontiguousarray(mapped)).to(label_array.device)
    return mapped


def zero_shot_ignore(labels, unseen_ids, ignore_index: int = IGNORE_INDEX):
    """Replace the pixels of unseen classes by `ignore_index` (zero-shot training: unseen classes never supervise).

    Args:
        labels: integer `np.ndarray` or `torch.Tensor` of class ids, any shape.
        unseen_ids: iterable of class ids to hide.
        ignore_index: value written on those pixels.

    Returns:
        A new array/tensor of the same type, shape and dtype.
    """
    unseen = sorted({int(i) for i in unseen_ids})
    if isinstance(labels, torch.Tensor):
        hidden = torch.isin(labels, torch.tensor(unseen, dtype=labels.dtype, device=labels.device))
        return labels.masked_fill(hidden, ignore_index)
    labels = np.asarray(labels)
    out = labels.copy()
    out[np.isin(labels, unseen)] = ignore_index
    return out


def check_label_ids(labels, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise a `ValueError` naming every id of `labels` outside `[0, num_classes)` other than `ignore_index`."""
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    present = np.unique(values)
    bad = [v.item() for v in present if v != ignore_index and not 0 <= v < num_classes]
    if bad:
        shown = bad[:20]
        raise ValueError(
            f"Label ids must lie in [0, {num_classes - 1}] or be the ignore index {ignore_index}; found "
            f"{len(bad)} other id(s): {shown}{' ...' if len(bad) > 20 else ''}."
        )


def dataset_info_with_class_names(class_names, description: str = "", features=None):
    """A `datasets.DatasetInfo` whose description records `class_names` (read back with [`get_class_names`]).

    `features` must be given (and equal to the dataset's) when the info is passed to `Dataset.from_dict`."""
    from datasets import DatasetInfo

    text = description.rstrip()
    text = (text + "\n" if text else "") + CLASS_NAMES_MARKER + json.dumps(list(class_names))
    return DatasetInfo(description=text, features=features)


def get_class_names(dataset) -> list[str] | None:
    """Class names stored by [`dataset_info_with_class_names`] in a `Dataset` (or the first split of a
    `DatasetDict`), or None when the dataset carries none."""
    info = getattr(dataset, "info", None)
    if info is None and hasattr(dataset, "values"):
        splits = list(dataset.values())
        info = splits[0].info if splits else None
    description = (info.description or "") if info is not None else ""
    for line in description.splitlines():
        if line.startswith(CLASS_NAMES_MARKER):
            return json.loads(line[len(CLASS_NAMES_MARKER) :])
    return None


__all__ = [
    "IGNORE_INDEX",
    "COCO_STUFF_UNUSED_RAW_IDS",
    "coco_stuff_lut",
    "coco_stuff_unseen_ids",
    "map_labels",
    "zero_shot_ignore",
    "check_label_ids",
    "dataset_info_with_class_names",
    "get_class_names",
]
