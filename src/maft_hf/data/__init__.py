"""Data utilities for MAFT fine-tuning: label conventions, training transforms and a synthetic dataset (`datasets` is
imported only by the functions that build datasets)."""

from .labels import (
    COCO_STUFF_UNUSED_RAW_IDS,
    IGNORE_INDEX,
    check_label_ids,
    coco_stuff_lut,
    coco_stuff_unseen_ids,
    dataset_info_with_class_names,
    get_class_names,
    map_labels,
    zero_shot_ignore,
)
from .synthetic import (
    SYNTHETIC_CLASS_NAMES,
    make_synthetic_dataset,
    make_synthetic_splits,
    render_scene,
    save_synthetic_dataset,
)
from .transforms import CLIP_MEAN, CLIP_STD, RELEASED_MAX_SIZE, RELEASED_SHORT_SIDES, to_clip_input

__all__ = [
    "COCO_STUFF_UNUSED_RAW_IDS",
    "IGNORE_INDEX",
    "check_label_ids",
    "coco_stuff_lut",
    "coco_stuff_unseen_ids",
    "dataset_info_with_class_names",
    "get_class_names",
    "map_labels",
    "zero_shot_ignore",
    "SYNTHETIC_CLASS_NAMES",
    "make_synthetic_dataset",
    "make_synthetic_splits",
    "render_scene",
    "save_synthetic_dataset",
    "CLIP_MEAN",
    "CLIP_STD",
    "RELEASED_MAX_SIZE",
    "RELEASED_SHORT_SIDES",
    "to_clip_input",
]
