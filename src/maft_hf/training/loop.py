"""Reusable pieces of MAFT fine-tuning (paper section 4.2, DESIGN.md section 2) as plain functions.

`scripts/finetune.py` chains them in an Accelerate loop; each piece is usable (and tested) on its own:

* model loading: [`load_model_and_processor`] (re-exported from `maft_hf.hub.loading`; a MAFT checkpoint, or a plain CLIP
  checkpoint converted on the fly);
* labels and data checks: [`LabelConverter`] (COCO-Stuff raw-id mapping, zero-shot ignoring and re-indexing),
  [`resolve_vocabulary`], [`select_split`], [`validate_training_dataset`] (columns, sizes, label ids, empty split);
* data: [`sample_augmentation`] / [`apply_augmentation`] (the released recipe: short side, random crop, flip, pad,
  with the same random draws as [`~maft_hf.data.transforms.train_transform`], also applied to precomputed
  proposals), [`TrainingExamples`] (a per-sample seeded view of a `datasets.Dataset`), [`StepBatchSampler`] (a
  deterministic sampler: the examples of every optimizer step depend only on the seed, the step and the global
  batch, so 1 or N processes and resumed runs see the same data), [`collate`] and [`prepare_batch`] (proposals at
  the training resolution, CLIP input at the model's `input_image_size`);
* the objective: [`MaskAwareStudent`] (one forward for the proposal logits and the whole-image logits, so one
  DDP call), [`image_class_logits`], [`training_step`] (Eq. 5-8, optionally normalised over the global batch);
* the schedule: [`poly_lr_scheduler`] (detectron2's `WarmupPolyLR`, power 0.9);
* a diagnostic: [`spearman_correlation`] and [`rank_correlation_eval`] (do proposals with a higher IoU with a GT
  class get a higher score for that class?);
* checkpoints: [`save_checkpoint`] (atomic: written to a temporary directory, then renamed),
  [`find_latest_checkpoint`], [`load_training_state`]; and [`write_model_card`].
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import IGNORE_INDEX, check_label_ids, coco_stuff_lut, get_class_names, label_map_array, map_labels
from ..data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_PAD_VALUE,
    RELEASED_MAX_SIZE,
    resize_image,
    resize_label,
    shortest_edge_size,
    to_clip_input,
)
from ..hub.loading import load_model_and_processor  # noqa: F401 - re-exported for the training CLI
from ..inference.semantic_map import classify_proposals
from ..inference.vocabulary import load_vocabulary, parse_vocabulary_argument, unseen_class_ids
from ..model.images import image_size as _image_size_of
from ..model.images import image_to_tensor
from ..model.modeling_maft import pad_proposals
from .losses import class_masks_from_labels, maft_loss, mask_aware_loss, soft_iou

logger = logging.getLogger(__name__)

LABEL_MAPPINGS = ("none", "coco_stuff")
CHECKPOINT_PREFIX = "step_"
TRAINING_STATE_FILE = "training_state.json"
LOSSES_FILE = "train_losses.json"
RESULTS_FILE = "all_results.json"


# ------------------------------------------------------------------------------------------------------------------
# Model loading
# ------------------------------------------------------------------------------------------------------------------


def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` (eval mode, no gradients): the original CLIP of the self-distillation loss."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


# ------------------------------------------------------------------------------------------------------------------
# Vocabulary, labels, dataset checks
# ------------------------------------------------------------------------------------------------------------------


def resolve_vocabulary(spec: str | Sequence[str] | None, dataset=None, label_mapping: str = "none") -> list[str]:
    """The class names that label id `i` refers to.

    Args:
        spec: a shipped vocabulary name (`"coco_stuff_171"`, ...), a text file (one class per line, synonyms allowed
            as `"building, edifice"`), a comma-separated list of names (`"sky,grass,car"`, or one name; use a file
            for names with synonyms), a list of names, or None: the class names stored in the dataset's info
            ([`~maft_hf.data.labels.get_class_names`]), and with `label_mapping="coco_stuff"` and no stored names,
            `"coco_stuff_171"`.
        dataset: the `Dataset` / `DatasetDict` whose stored names are the default.
        label_mapping: see [`LabelConverter`].
    """
    if spec is None:
        names = get_class_names(dataset) if dataset is not None else None
        if names is None and label_mapping == "coco_stuff":
            names = load_vocabulary("coco_stuff_171")
        if names is None:
            raise ValueError(
                "No vocabulary: the dataset stores no class names in its info (see "
                "maft_hf.data.labels.dataset_info_with_class_names); pass --vocabulary (a shipped name, a .txt file "
                "with one class per line, or a comma-separated list)."
            )
        return load_vocabulary(list(names))
    if isinstance(spec, (list, tuple)):
        return load_vocabulary(list(spec))
    return parse_vocabulary_argument(spec)


def resolve_unseen_classes(spec: str | Sequence[str], class_names: Sequence[str]) -> list[int]:
    """Indices into `class_names` of the unseen classes named by `spec`.

    `spec` is a shipped vocabulary (default `"coco_stuff_unseen_15"`), a file, a comma-separated list or a list of
    names; every name must be in `class_names` (a `ValueError` lists those that are not).
    """
    return unseen_class_ids(spec, class_names)


class LabelConverter:
    """Dataset label map -> training label ids, with checks.

    Steps, in order:

    1. `label_mapping="coco_stuff"`: raw COCO-Stuff `stuffthingmaps` values (COCO id - 1, 0..181, 255 unlabelled)
       -> contiguous ids 0..170 ([`~maft_hf.data.labels.coco_stuff_lut`]); unused ids and 255 -> `ignore_index`.
       `"none"`: labels are already contiguous ids.
    2. check: every id is in `[0, num_classes)` or is `ignore_index`, else `ValueError`.
    3. zero-shot (`unseen_ids` given): pixels of unseen classes -> `ignore_index`, and the seen ids are renumbered
       to their position in the seen vocabulary ([`training_class_names`]).

    Args:
        class_names: the dataset's full vocabulary (label id `i` = `class_names[i]` after step 1).
        label_mapping: `"none"` or `"coco_stuff"`.
        unseen_ids: ids (into `class_names`) hidden in zero-shot training; empty = open-vocabulary training.
        ignore_index: label of unlabelled pixels (in the input after step 1, and in the output).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        label_mapping: str = "none",
        unseen_ids: Sequence[int] = (),
        ignore_index: int = IGNORE_INDEX,
    ):
        if label_mapping not in LABEL_MAPPINGS:
            raise ValueError(f"label_mapping must be one of {LABEL_MAPPINGS}, got {label_mapping!r}.")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        if 0 <= ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is a class id of the {self.num_classes}-class vocabulary; use a value "
                f">= {self.num_classes} (e.g. 65535 for vocabularies of more than 255 classes)."
            )
        self.label_mapping = label_mapping
        self.ignore_index = int(ignore_index)
        self.unseen_ids = sorted({int(i) for i in unseen_ids})
        bad = [i for i in self.unseen_ids if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f"unseen_ids must lie in [0, {self.num_classes - 1}], got {bad}.")
        seen = [i for i in range(self.num_classes) if i not in set(self.unseen_ids)]
        if not seen:
            raise ValueError("Every class is unseen: the training vocabulary would be empty.")
        self.seen_ids = seen
        self._renumber = np.full(self.num_classes, self.ignore_index, dtype=np.int64)
        self._renumber[seen] = np.arange(len(seen))

    @property
    def training_class_names(self) -> list[str]:
        """The training vocabulary: `class_names` without the unseen classes, in id order."""
        return [self.class_names[i] for i in self.seen_ids]

    def __call__(self, label) -> np.ndarray:
        """`(H, W)` integer label map -> `(H, W)` int64 training ids (`ignore_index` = unlabelled)."""
        values = np.asarray(label)
        if values.dtype.kind not in "iu":
            raise ValueError(f"Label maps must hold integer class ids, got dtype {values.dtype}.")
        values = values.astype(np.int64)
        if self.label_mapping == "coco_stuff":
            if values.size and (values.min() < 0 or values.max() > 255):
                raise ValueError(
                    "--label_mapping coco_stuff expects raw stuffthingmaps values in 0..255 (COCO id - 1, 255 "
                    f"unlabelled), got values in [{values.min()}, {values.max()}]."
                )
            values = map_labels(values, coco_stuff_lut(IGNORE_INDEX).astype(np.int64))
            values[values == IGNORE_INDEX] = self.ignore_index
        check_label_ids(values, self.num_classes, self.ignore_index)
        if self.unseen_ids:
            labelled = values != self.ignore_index
            values = np.where(labelled, self._renumber[np.where(labelled, values, 0)], self.ignore_index)
        return values


def select_split(dataset, split: str | None, allow_unsplit: bool = True):
    """The split `split` of a `DatasetDict` (clear errors for a missing split).

    A single `Dataset` (no splits) is returned as is when `allow_unsplit` (the training split), and refused otherwise
    (a held-out split must not silently be the training data).
    """
    from datasets import DatasetDict, IterableDatasetDict

    if isinstance(dataset, (DatasetDict, IterableDatasetDict, dict)):
        available = list(dataset.keys())
        if split is None or split not in available:
            raise ValueError(f"The dataset has no split {split!r}; available splits: {available}.")
        return dataset[split]
    if not allow_unsplit:
        raise ValueError(f"The dataset has no splits (a single Dataset), so it has no split {split!r}.")
    return dataset


def label_to_array(label) -> np.ndarray:
    """A PIL label map (mode "L", "P", "I;16", "I"), array or nested list -> `(H, W)` integer array."""
    return label_map_array(label)


def proposals_from_column(value, image_size: tuple[int, int]) -> torch.Tensor:
    """A precomputed-proposal cell -> `(N, H, W)` float32 probabilities at the image size.

    Accepted: an `(N, h, w)` array (or nested list, or list of single-band PIL masks): bool, integer 0/1, integer
    0..255 (divided by 255) or float in [0, 1] (the rules of [`~maft_hf.proposals.proposals_from_user_masks`]);
    masks of another size than the image are resized bilinearly to it.
    """
    from ..proposals.user_masks import proposals_from_user_masks

    if isinstance(value, (list, tuple)) and value and hasattr(value[0], "getbands"):
        masks = list(value)
    else:
        masks = np.asarray(value)
        if masks.ndim != 3:
            raise ValueError(
                f"A proposal cell must be a stack of masks (N, H, W), got an array of shape {masks.shape}."
            )
    return proposals_from_user_masks(masks, image_size=image_size).masks


def check_columns(dataset, columns: dict[str, str | None], split: str) -> None:
    """Raise a `ValueError` naming each missing column (`{flag: column}` pairs, None = not used)."""
    missing = {flag: name for flag, name in columns.items() if name is not None and name not in dataset.column_names}
    if missing:
        described = ", ".join(f"{flag} {name!r}" for flag, name in missing.items())
        raise ValueError(
            f"Split {split!r} has no column {described}; its columns are {dataset.column_names}. Name the right "
            "columns with --image_column / --label_column / --proposal_column."
        )


def validate_training_dataset(
    dataset,
    image_column: str,
    label_column: str,
    label_converter: LabelConverter,
    proposal_column: str | None = None,
    split: str = "train",
    indices: Sequence[int] | None = None,
) -> int:
    """Check a training split before any training step; raise a `ValueError` that says what was expected.

    Checks: the split is not empty; the image, label (and proposal) columns exist; for every example in `indices`
    (default: all): the label map is a single-channel integer map of the image's size, its ids (after the
    [`LabelConverter`]'s mapping) are class ids of the vocabulary or the ignore index, and the proposal cell (if
    any) is an `(N, H, W)` stack with `N >= 1`. Images are not decoded when the column allows it (only their size
    is read).

    Returns:
        The number of examples checked.
    """
    if len(dataset) == 0:
        raise ValueError(f"Split {split!r} is empty: fine-tuning needs at least one example.")
    check_columns(
        dataset,
        {"--image_column": image_column, "--label_column": label_column, "--proposal_column": proposal_column},
        split,
    )
    view = dataset
    try:
        from datasets import Image

        if isinstance(dataset.features.get(image_column), Image):
            view = dataset.cast_column(image_column, Image(decode=False))
    except (AttributeError, ImportError, ValueError):
        view = dataset
    indices = range(len(dataset)) if indices is None else indices
    checked = 0
    for index in indices:
        row = view[int(index)]
        where = f"example {int(index)} of split {split!r}"
        height, width = _image_size_of(row[image_column])
        try:
            label = label_to_array(row[label_column])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if tuple(label.shape) != (height, width):
            raise ValueError(
                f"{where}: the image is {height}x{width} (HxW) but its label map is {label.shape[0]}x{label.shape[1]}; "
                "images and label maps must have the same size."
            )
        try:
            label_converter(label)
        except ValueError as err:
            raise ValueError(
                f"{where}: {err} The vocabulary has {label_converter.num_classes} classes "
                f"(--label_mapping {label_converter.label_mapping}, ignore index {label_converter.ignore_index})."
            ) from None
        if proposal_column is not None:
            try:
                proposals_from_column(row[proposal_column], (height, width))
            except ValueError as err:
                raise ValueError(f"{where}, column {proposal_column!r}: {err}") from None
        checked += 1
    return checked


# ------------------------------------------------------------------------------------------------------------------
# Augmentation (the released recipe) and seeded examples
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentationConfig:
    """Settings of the training augmentation (defaults: the released recipe at 640 px, single scale).

    Attributes:
        crop_size: side of the square training crop (the proposal / IoU resolution), 640 as released.
        short_side: the short side after resizing, or a tuple to draw one from per image
            (`maft_hf.data.transforms.RELEASED_SHORT_SIDES` for the released multi-scale choice).
        max_size: cap on the long side after resizing (2560 as released).
        flip_prob: probability of a horizontal flip.
    """

    crop_size: int = 640
    short_side: int | tuple[int, ...] = 640
    max_size: int | None = RELEASED_MAX_SIZE
    flip_prob: float = 0.5


@dataclass(frozen=True)
class AugmentationParams:
    """The random choices of one augmented example (see [`sample_augmentation`])."""

    resized_size: tuple[int, int]
    top: int
    left: int
    crop_height: int
    crop_width: int
    flip: bool
    pad_size: int


def sample_augmentation(
    height: int, width: int, config: AugmentationConfig, generator: torch.Generator | None = None
) -> AugmentationParams:
    """Draw the random choices of [`~maft_hf.data.transforms.train_transform`] for an `height x width` image.

    The draws happen in the same order and with the same calls as `train_transform` (short side if a tuple, crop
    top, crop left, flip), so with equally seeded generators both give the same geometry.
    """
    short = config.short_side
    if not isinstance(short, int):
        choices = list(short)
        if not choices:
            raise ValueError("short_side must be an int or a non-empty sequence of ints.")
        short = int(choices[torch.randint(len(choices), (1,), generator=generator).item()])
    resized = shortest_edge_size(height, width, short, config.max_size)
    crop_h, crop_w = min(resized[0], config.crop_size), min(resized[1], config.crop_size)
    top = int(torch.randint(resized[0] - crop_h + 1, (1,), generator=generator).item())
    left = int(torch.randint(resized[1] - crop_w + 1, (1,), generator=generator).item())
    flip = bool(torch.rand((), generator=generator).item() < config.flip_prob)
    return AugmentationParams(tuple(resized), top, left, crop_h, crop_w, flip, config.crop_size)


def _crop_flip_pad(tensor: torch.Tensor, params: AugmentationParams, pad_value: float) -> torch.Tensor:
    tensor = tensor[..., params.top : params.top + params.crop_height, params.left : params.left + params.crop_width]
    if params.flip:
        tensor = tensor.flip(-1)
    padding = (0, params.pad_size - tensor.shape[-1], 0, params.pad_size - tensor.shape[-2])
    return F.pad(tensor, padding, value=pad_value)


def apply_augmentation(
    params: AugmentationParams,
    image: torch.Tensor,
    label: torch.Tensor,
    proposal_masks: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Resize, crop, flip and pad (bottom/right) an example with the choices `params`.

    Args:
        params: from [`sample_augmentation`].
        image: `uint8 (3, H, W)`; bilinear (antialiased) resize, padded with 128.
        label: `(H, W)` integer ids; nearest resize, padded with `ignore_index`.
        proposal_masks: optional `(N, H, W)` float probabilities; bilinear (antialiased) resize, padded with 0.

    Returns:
        `(image (3, S, S), label (S, S), proposal_masks (N, S, S) or None)` with `S = params.pad_size`.
    """
    image = _crop_flip_pad(resize_image(image, params.resized_size), params, IMAGE_PAD_VALUE)
    label = _crop_flip_pad(resize_label(label, params.resized_size), params, ignore_index)
    if proposal_masks is not None:
        masks = proposal_masks.float()
        if tuple(masks.shape[-2:]) != tuple(params.resized_size):
            masks = F.interpolate(
                masks[None], size=params.resized_size, mode="bilinear", align_corners=False, antialias=True
            )[0].clamp(0.0, 1.0)
        proposal_masks = _crop_flip_pad(masks, params, 0.0)
    return image, label, proposal_masks


def derived_seed(*entropy: int) -> int:
    """A 64-bit seed derived from non-negative integers (numpy's `SeedSequence`): independent streams per tuple."""
    if any(int(value) < 0 for value in entropy):
        raise ValueError(f"Seeds must be non-negative integers, got {entropy}.")
    return int(np.random.SeedSequence([int(value) for value in entropy]).generate_state(1, dtype=np.uint64)[0])


def example_generator(seed: int, position: int) -> torch.Generator:
    """The `torch.Generator` of the augmentation of stream position `position` (see [`StepBatchSampler`])."""
    return torch.Generator().manual_seed(derived_seed(seed, 0, position))


class TrainingExamples(torch.utils.data.Dataset):
    """Augmented training examples of a `datasets.Dataset`, addressed by `(position, index)` keys.

    `index` selects the row; `position` (the example's place in the sample stream of [`StepBatchSampler`]) seeds
    its augmentation, so an example's crop and flip do not depend on the process, the worker or the batch it lands
    in.

    Items are dicts: `"image"` uint8 `(3, S, S)`, `"label"` int64 `(S, S)` (training ids, see [`LabelConverter`]),
    `"position"`, `"index"`, and `"proposal_masks"` float `(N, S, S)` when `proposal_column` is set.
    """

    def __init__(
        self,
        dataset,
        label_converter: LabelConverter,
        augmentation: AugmentationConfig = AugmentationConfig(),
        seed: int = 0,
        image_column: str = "image",
        label_column: str = "label",
        proposal_column: str | None = None,
    ):
        columns = [image_column, label_column] + ([proposal_column] if proposal_column else [])
        flags = {"--image_column": image_column, "--label_column": label_column, "--proposal_column": proposal_column}
        check_columns(dataset, flags, "train")
        self.dataset = dataset.select_columns(columns) if hasattr(dataset, "select_columns") else dataset
        self.label_converter = label_converter
        self.augmentation = augmentation
        self.seed = int(seed)
        self.image_column, self.label_column, self.proposal_column = image_column, label_column, proposal_column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        position, index = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), int(key))
        row = self.dataset[index]
        image = image_to_tensor(row[self.image_column])
        label = torch.from_numpy(self.label_converter(label_to_array(row[self.label_column])))
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f"Example {index}: image {tuple(image.shape[-2:])} and label {tuple(label.shape)} differ in size."
            )
        masks = None
        if self.proposal_column is not None:
            masks = proposals_from_column(row[self.proposal_column], tuple(image.shape[-2:]))
        params = sample_augmentation(*image.shape[-2:], self.augmentation, example_generator(self.seed, position))
        image, label, masks = apply_augmentation(params, image, label, masks, self.label_converter.ignore_index)
        item = {"image": image, "label": label, "position": position, "index": index}
        if masks is not None:
            item["proposal_masks"] = masks
        return item


class StepBatchSampler(torch.utils.data.Sampler):
    """Deterministic batches of `(position, index)` keys for one process, from `start_step` to `max_steps`.

    The sample stream is an endless sequence of shuffled passes over the dataset (pass `e` is
    `randperm(num_examples)` seeded by `(seed, e)`, like detectron2's infinite `TrainingSampler`). Optimizer step
    `s` consumes stream positions `[s * G, (s + 1) * G)` with `G = per_device_batch_size * num_processes *
    gradient_accumulation_steps`; micro-step `a` of process `r` takes the contiguous slice starting at
    `s * G + (a * num_processes + r) * per_device_batch_size`. The data of a step therefore depends only on the
    seed, the step and `G`: one process with batch 16 and two with batch 8 see the same 16 examples, and a resumed
    run (`start_step` > 0) continues with exactly the batches the interrupted run would have used.

    Yields, per micro-step, a list of `per_device_batch_size` `(position, index)` pairs; `len()` is the number of
    micro-batches.
    """

    def __init__(
        self,
        num_examples: int,
        per_device_batch_size: int,
        max_steps: int,
        num_processes: int = 1,
        process_index: int = 0,
        gradient_accumulation_steps: int = 1,
        start_step: int = 0,
        seed: int = 0,
    ):
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
        for name, value in (
            ("per_device_batch_size", per_device_batch_size),
            ("num_processes", num_processes),
            ("gradient_accumulation_steps", gradient_accumulation_steps),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index must be in [0, {num_processes - 1}], got {process_index}.")
        if not 0 <= start_step <= max_steps:
            raise ValueError(f"start_step must be in [0, max_steps={max_steps}], got {start_step}.")
        self.num_examples = int(num_examples)
        self.per_device_batch_size = int(per_device_batch_size)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.max_steps, self.start_step, self.seed = int(max_steps), int(start_step), int(seed)
        self._permutation: tuple[int, torch.Tensor] | None = None

    @property
    def global_batch_size(self) -> int:
        return self.per_device_batch_size * self.num_processes * self.gradient_accumulation_steps

    def index_at(self, position: int) -> int:
        """The dataset row at stream position `position`."""
        epoch, offset = divmod(int(position), self.num_examples)
        if self._permutation is None or self._permutation[0] != epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, 1, epoch))
            self._permutation = (epoch, torch.randperm(self.num_examples, generator=generator))
        return int(self._permutation[1][offset])

    def positions(self, step: int, micro_step: int = 0) -> range:
        """Stream positions of this process's micro-batch `micro_step` of optimizer step `step`."""
        start = step * self.global_batch_size
        start += (micro_step * self.num_processes + self.process_index) * self.per_device_batch_size
        return range(start, start + self.per_device_batch_size)

    def __iter__(self):
        for step in range(self.start_step, self.max_steps):
            for micro_step in range(self.gradient_accumulation_steps):
                yield [(position, self.index_at(position)) for position in self.positions(step, micro_step)]

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.gradient_accumulation_steps


def collate(examples: Sequence[dict]) -> dict:
    """Stack [`TrainingExamples`] items into a batch.

    Returns:
        `images` uint8 `(B, 3, S, S)`, `labels` int64 `(B, S, S)`, `positions` and `indices` long `(B,)`, and, when
        the items carry proposals, `proposal_masks (B, N_max, S, S)` zero-padded with `proposal_valid_mask (B,
        N_max)` (see `pad_proposals`).
    """
    if not examples:
        raise ValueError("collate needs at least one example.")
    batch = {
        "images": torch.stack([example["image"] for example in examples]),
        "labels": torch.stack([example["label"].long() for example in examples]),
        "positions": torch.tensor([int(example["position"]) for example in examples]),
        "indices": torch.tensor([int(example["index"]) for example in examples]),
    }
    if "proposal_masks" in examples[0]:
        batch["proposal_masks"], batch["proposal_valid_mask"] = pad_proposals(
            [example["proposal_masks"] for example in examples]
        )
    return batch


def load_training_proposal_generator(
    spec: str, local_files_only: bool | None = None, num_proposals: int | None = None, device=None
):
    """A frozen proposal generator from a spec (see [`~maft_hf.proposals.load_proposal_generator`]).

    `local_files_only` reaches the checkpoint-based kinds only, `num_proposals` (top-N queries) the
    universal-segmentation kinds (as `num_proposals`) and SAM (as `max_proposals`); the generator's model is moved to
    `device` in eval mode without gradients.
    """
    from ..proposals.factory import load_proposal_generator, parse_proposal_spec

    kind, _ = parse_proposal_spec(spec)
    options = {}
    if kind not in ("grid", "kmeans"):
        if local_files_only is not None:
            options["local_files_only"] = local_files_only
        if num_proposals is not None:
            options["max_proposals" if kind == "sam" else "num_proposals"] = num_proposals
    elif num_proposals is not None:
        raise ValueError(f"num_proposals does not apply to the weight-free proposal source {spec!r}.")
    generator = load_proposal_generator(spec, **options)
    model = getattr(generator, "model", None)
    if isinstance(model, nn.Module):
        if device is not None:
            model.to(device)
        model.eval().requires_grad_(False)
    return generator


def generate_proposals(proposal_generator, images: torch.Tensor) -> list[torch.Tensor]:
    """Proposals `(N_i, S, S)` of training crops `images` (uint8 `(B, 3, S, S)`), with no gradient.

    Universal-segmentation generators run on the crops as they are (`generate_prepared`: normalised and padded, no
    resize), as the released training does; any other generator is called with the list of crops.
    """
    with torch.no_grad():
        if hasattr(proposal_generator, "generate_prepared"):
            proposals = proposal_generator.generate_prepared(images)
        else:
            proposals = proposal_generator(list(images))
    if len(proposals) != images.shape[0]:
        raise ValueError(f"The proposal generator returned {len(proposals)} results for {images.shape[0]} images.")
    masks = []
    for index, item in enumerate(proposals):
        if tuple(item.masks.shape[-2:]) != tuple(images.shape[-2:]):
            raise ValueError(
                f"Proposals of image {index} have size {tuple(item.masks.shape[-2:])}; expected the crop size "
                f"{tuple(images.shape[-2:])}."
            )
        masks.append(item.masks.float())
    return masks


def prepare_batch(
    batch: dict,
    input_image_size: int,
    proposal_generator=None,
    image_mean: Sequence[float] = CLIP_MEAN,
    image_std: Sequence[float] = CLIP_STD,
    device: torch.device | str | None = None,
) -> dict:
    """Model inputs of a [`collate`]d batch.

    Returns:
        `pixel_values` float `(B, 3, s, s)` with `s = input_image_size`, `proposal_masks` float `(B, N, S, S)` at the
        training resolution (from the batch's precomputed proposals, else from `proposal_generator`),
        `proposal_valid_mask` bool `(B, N)` and `labels` int64 `(B, S, S)`, all on `device`.
    """
    device = torch.device(device) if device is not None else batch["images"].device
    images = batch["images"].to(device)
    if "proposal_masks" in batch:
        masks, valid = batch["proposal_masks"].to(device), batch["proposal_valid_mask"].to(device)
    else:
        if proposal_generator is None:
            raise ValueError("The batch carries no proposals: pass a proposal_generator (or use a proposal column).")
        masks, valid = pad_proposals([m.to(device) for m in generate_proposals(proposal_generator, images)])
    return {
        "pixel_values": to_clip_input(images, input_image_size, image_mean, image_std),
        "proposal_masks": masks,
        "proposal_valid_mask": valid,
        "labels": batch["labels"].to(device),
    }


# ------------------------------------------------------------------------------------------------------------------
# Objective
# ------------------------------------------------------------------------------------------------------------------


def image_class_logits(model, pixel_values: torch.Tensor, text_classifier: torch.Tensor) -> torch.Tensor:
    """Whole-image class logits (no proposals): `exp(logit_scale) * cos(image embedding, class embedding)`.

    Args:
        model: a `MaskAwareCLIPModel` (or `CLIPModel`).
        pixel_values: `(B, 3, s, s)`.
        text_classifier: `(C, projection_dim)`.

    Returns:
        `(B, C)` logits; `softmax(-1)` gives the class scores of the self-distillation loss (Eq. 8).
    """
    features = model.get_image_features(pixel_values)
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    image_embeds = F.normalize(features, dim=-1)
    text_embeds = F.normalize(text_classifier.to(device=image_embeds.device, dtype=image_embeds.dtype), dim=-1)
    return model.logit_scale.exp() * image_embeds @ text_embeds.t()


class MaskAwareStudent(nn.Module):
    """The trained model as one module whose `forward` returns both logits MAFT's loss needs.

    Distributed data parallel synchronises gradients of what runs inside `forward`, so the proposal pass and the
    whole-image pass must happen in one call; wrap the `MaskAwareCLIPModel` in this before `accelerator.prepare`.
    `student.model` is the wrapped model (what gets saved).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor,
        proposal_masks: torch.Tensor,
        text_classifier: torch.Tensor,
        proposal_valid_mask: torch.Tensor | None = None,
        with_image_logits: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(mask_logits (B, N, C), image_logits (B, C) or None)`."""
        mask_logits = classify_proposals(self.model, pixel_values, proposal_masks, text_classifier, proposal_valid_mask)
        image_logits = image_class_logits(self.model, pixel_values, text_classifier) if with_image_logits else None
        return mask_logits, image_logits


def mask_aware_entry_count(
    labels: torch.Tensor, num_classes: int, proposal_valid_mask: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Number of (image, present class, valid proposal) entries the mask-aware loss averages over.

    Args:
        labels: `(B, H, W)` training ids.
        num_classes: `C`.
        proposal_valid_mask: `(B, N)` bool.

    Returns:
        A 0-d int64 tensor: `sum_b K_b * N_b`.
    """
    flat = labels.reshape(labels.shape[0], -1).long()
    valid = flat != ignore_index
    if ((flat < 0) | (flat >= num_classes))[valid].any():
        bad = sorted(set(flat[valid & ((flat < 0) | (flat >= num_classes))].tolist()))[:20]
        raise ValueError(f"labels must hold ids in [0, {num_classes - 1}] or {ignore_index}, got ids {bad}.")
    present = torch.zeros(labels.shape[0], num_classes + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, torch.where(valid, flat, torch.full_like(flat, num_classes)), True)
    classes = present[:, :num_classes].sum(1).to(proposal_valid_mask.device)
    return (classes * proposal_valid_mask.sum(1)).sum()


@dataclass
class TrainingStepOutput:
    """Result of [`training_step`].

    Attributes:
        loss: the scalar to back-propagate (see `training_step` for its normalisation).
        mask_aware_loss: `L_ma` of this batch alone (mean over its entries), detached.
        distillation_loss: unweighted `L_dis` of this batch alone, detached; None when `distillation_weight` is 0.
        mask_aware_sum / mask_aware_count: `L_ma * count` and the number of entries (for global averages).
        distillation_sum / distillation_count: `L_dis * B * C` and `B * C` (0 without distillation).
    """

    loss: torch.Tensor
    mask_aware_loss: torch.Tensor
    distillation_loss: torch.Tensor | None
    mask_aware_sum: torch.Tensor
    mask_aware_count: torch.Tensor
    distillation_sum: torch.Tensor
    distillation_count: int = 0
    extras: dict = field(default_factory=dict)


def training_step(
    student,
    teacher,
    batch: dict,
    text_classifier: torch.Tensor,
    distillation_weight: float = 0.1,
    *,
    ignore_index: int = IGNORE_INDEX,
    mask_aware_normalizer: float | torch.Tensor | None = None,
    distillation_normalizer: float | torch.Tensor | None = None,
    loss_scale: float = 1.0,
    autocast=None,
) -> TrainingStepOutput:
    """Forward pass and MAFT loss of one batch: `L = L_ma + lambda * L_dis` (paper Eq. 5-8, as released).

    The student classifies the batch's proposals (`L_ma` against the soft-IoU targets) and, when
    `distillation_weight > 0`, the whole images without proposals; the frozen teacher does the latter too, under
    `torch.no_grad()` (`L_dis`).

    Normalisation: by default `loss = loss_scale * (L_ma + lambda * L_dis)` with both terms averaged over this batch
    (the release averages over each device's batch). With `mask_aware_normalizer` / `distillation_normalizer` (the
    number of mask-aware entries / `B * C` of the whole global batch, over all processes and accumulation
    micro-steps) the terms become sums over this batch divided by those: summed over all micro-batches and processes,
    the gradient is that of one batch holding the global batch, whatever the split. (With DDP's gradient averaging,
    pass `loss_scale = num_processes`.)

    Args:
        student: a [`MaskAwareStudent`] (possibly wrapped by `accelerator.prepare`), or a `MaskAwareCLIPModel`
            (wrapped on the fly).
        teacher: the frozen original model (`MaskAwareCLIPModel`), or None when `distillation_weight` is 0.
        batch: from [`prepare_batch`]: `pixel_values (B, 3, s, s)`, `proposal_masks (B, N, S, S)`,
            `proposal_valid_mask (B, N)`, `labels (B, S, S)`.
        text_classifier: `(C, projection_dim)` from the frozen text tower.
        distillation_weight: lambda (0.1 as released, 1 in the paper).
        ignore_index: label of unlabelled pixels.
        autocast: optional context manager factory for the teacher's pass (e.g. `accelerator.autocast`).

    Returns:
        [`TrainingStepOutput`].
    """
    from ..model.modeling_maft import MaskAwareCLIPModel

    if isinstance(student, MaskAwareCLIPModel):
        student = MaskAwareStudent(student)
    with_distillation = distillation_weight != 0
    if with_distillation and teacher is None:
        raise ValueError("A teacher is required when distillation_weight is not 0.")
    mask_logits, student_image_logits = student(
        batch["pixel_values"],
        batch["proposal_masks"],
        text_classifier,
        batch["proposal_valid_mask"],
        with_image_logits=with_distillation,
    )
    teacher_image_logits = None
    if with_distillation:
        with torch.no_grad(), autocast() if autocast is not None else nullcontext():
            teacher_image_logits = image_class_logits(teacher, batch["pixel_values"], text_classifier)
    terms = maft_loss(
        mask_logits.float(),
        batch["proposal_masks"],
        batch["labels"],
        None if student_image_logits is None else student_image_logits.float(),
        None if teacher_image_logits is None else teacher_image_logits.float(),
        distillation_weight=distillation_weight,
        ignore_index=ignore_index,
        proposal_valid_mask=batch["proposal_valid_mask"],
    )
    num_classes = mask_logits.shape[-1]
    count = mask_aware_entry_count(batch["labels"], num_classes, batch["proposal_valid_mask"], ignore_index)
    distillation_count = int(mask_logits.shape[0] * num_classes) if with_distillation else 0
    if mask_aware_normalizer is None and distillation_normalizer is None:
        loss = terms.loss
    else:
        if mask_aware_normalizer is None or (with_distillation and distillation_normalizer is None):
            raise ValueError("Pass both mask_aware_normalizer and distillation_normalizer, or neither.")
        loss = terms.mask_aware_loss * count.to(terms.mask_aware_loss) / mask_aware_normalizer
        if with_distillation:
            loss = loss + distillation_weight * terms.distillation_loss * distillation_count / distillation_normalizer
    dis = terms.distillation_loss.detach() if terms.distillation_loss is not None else None
    return TrainingStepOutput(
        loss=loss * loss_scale,
        mask_aware_loss=terms.mask_aware_loss.detach(),
        distillation_loss=dis,
        mask_aware_sum=terms.mask_aware_loss.detach() * count,
        mask_aware_count=count,
        distillation_sum=(dis * distillation_count) if dis is not None else torch.zeros((), device=count.device),
        distillation_count=distillation_count,
    )


def poly_lr_scheduler(optimizer, num_training_steps: int, power: float = 0.9, num_warmup_steps: int = 0):
    """detectron2's `WarmupPolyLR` without warmup factor (the released schedule): `lr * (1 - step / T) ** power`,
    after an optional linear warmup; `transformers.get_polynomial_decay_schedule_with_warmup` with `lr_end=0`.
    Step it once per optimizer step."""
    from transformers import get_polynomial_decay_schedule_with_warmup

    if num_training_steps < 1:
        raise ValueError(f"num_training_steps must be >= 1, got {num_training_steps}.")
    return get_polynomial_decay_schedule_with_warmup(
        optimizer, num_warmup_steps, num_training_steps, lr_end=0.0, power=power
    )


# ------------------------------------------------------------------------------------------------------------------
# Rank-correlation diagnostic
# ------------------------------------------------------------------------------------------------------------------


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank (float64)."""
    if values.ndim != 1:
        raise ValueError(f"average_ranks expects a 1-D tensor, got shape {tuple(values.shape)}.")
    order = torch.argsort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    group_ranks = ends - (counts.double() - 1) / 2
    ranks = torch.empty(values.shape[0], dtype=torch.float64, device=values.device)
    ranks[order] = group_ranks[inverse]
    return ranks


def spearman_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (Pearson correlation of the average ranks).

    Returns NaN when either input is constant (the correlation is undefined)."""
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman_correlation expects two 1-D tensors of one length, got {x.shape} and {y.shape}.")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.square().sum() * ry.square().sum()).sqrt()
    if denominator == 0:
        return float("nan")
    return float((rx * ry).sum() / denominator)


@torch.no_grad()
def rank_correlation_eval(
    model,
    dataset,
    text_classifier: torch.Tensor,
    proposal_generator=None,
    *,
    label_converter: LabelConverter | None = None,
    image_column: str = "image",
    label_column: str = "label",
    proposal_column: str | None = None,
    input_image_size: int | None = None,
    image_mean: Sequence[float] = CLIP_MEAN,
    image_std: Sequence[float] = CLIP_STD,
    max_samples: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict:
    """How well class scores rank proposals by their IoU with the ground truth, on held-out images.

    For every image and every class `c` present in its label map, over the image's `N` proposals: Spearman's rank
    correlation between the proposals' class scores `softmax(logits)[:, c]` and their soft IoU with the class map
    (the quantity the mask-aware loss regresses, [`~maft_hf.training.losses.soft_iou`]). Rows where either is constant are
    skipped. Also reports the mask-aware loss ([`~maft_hf.training.losses.mask_aware_loss`]) over the same images, averaged
    over all (image, class, proposal) entries. Images are used at their own size (no augmentation); proposals come
    from `proposal_generator` (called with the image) or from `proposal_column`.

    Args:
        model: a `MaskAwareCLIPModel` (run in eval mode; its training flag is restored).
        dataset: a `datasets.Dataset` with image and label columns.
        text_classifier: `(C, projection_dim)`.
        label_converter: maps the stored labels to training ids (default: identity with `ignore_index`).
        input_image_size: CLIP input side (default: `model.config.vision_config.input_image_size`).
        max_samples: use the first `max_samples` examples only.

    Returns:
        `{"spearman": mean over rows, "mask_aware_loss": float, "num_rows": int, "num_images": int}` (NaN where
        nothing counts).
    """
    if proposal_generator is None and proposal_column is None:
        raise ValueError("rank_correlation_eval needs a proposal_generator or a proposal_column.")
    size = input_image_size or model.config.vision_config.input_image_size
    num_classes = text_classifier.shape[0]
    parameter = next(model.parameters())
    device = parameter.device
    count = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    correlations, was_training = [], model.training
    loss_sum, loss_count = 0.0, 0
    model.eval()
    try:
        for index in range(count):
            row = dataset[index]
            image = image_to_tensor(row[image_column])
            raw = label_to_array(row[label_column])
            label = label_converter(raw) if label_converter is not None else raw.astype(np.int64)
            label = torch.from_numpy(np.asarray(label)).to(device)
            if proposal_column is not None:
                masks = proposals_from_column(row[proposal_column], tuple(image.shape[-2:]))
            else:
                masks = generate_proposals(proposal_generator, image[None])[0]
            masks = masks.to(device)
            pixel_values = to_clip_input(image[None].to(device), size, image_mean, image_std)
            logits = classify_proposals(model, pixel_values, masks[None], text_classifier.to(device))[0]
            scores = logits.float().softmax(-1)  # (N, C)
            all_valid = torch.ones(1, masks.shape[0], dtype=torch.bool)
            entries = int(mask_aware_entry_count(label[None], num_classes, all_valid, ignore_index))
            if entries:
                loss = mask_aware_loss(logits[None].float(), masks[None], label[None], ignore_index)
                loss_sum, loss_count = loss_sum + float(loss) * entries, loss_count + entries
            class_ids, class_valid, class_masks = class_masks_from_labels(label[None], num_classes, ignore_index)
            iou = soft_iou(masks[None], class_masks)[0]  # (K, N)
            for k in range(class_ids.shape[1]):
                if not bool(class_valid[0, k]):
                    continue
                rho = spearman_correlation(scores[:, int(class_ids[0, k])].double(), iou[k].double())
                if rho == rho:
                    correlations.append(rho)
    finally:
        model.train(was_training)
    spearman = float(np.mean(correlations)) if correlations else float("nan")
    held_out_loss = loss_sum / loss_count if loss_count else float("nan")
    return {"spearman": spearman, "mask_aware_loss": held_out_loss, "num_rows": len(correlations), "num_images": count}


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------------------------


def _checkpoint_step(name: str) -> int | None:
    match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", name)
    return int(match.group(1)) if match else None


def find_latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The complete checkpoint `output_dir/step_<K>` with the largest `K`, or None.

    Only directories renamed into place by [`save_checkpoint`] are considered (temporary `.tmp_step_*` directories
    left by a killed run are ignored), and each must hold its `training_state.json`.
    """
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        step = _checkpoint_step(name)
        path = os.path.join(output_dir, name)
        if step is not None and os.path.isfile(os.path.join(path, TRAINING_STATE_FILE)):
            found.append((step, path))
    return max(found)[1] if found else None


def load_training_state(checkpoint_dir: str | os.PathLike) -> dict:
    """The `training_state.json` of a checkpoint (completed steps, loss history, data-order settings)."""
    path = os.path.join(checkpoint_dir, TRAINING_STATE_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"{os.fspath(checkpoint_dir)!r} is not a fine-tuning checkpoint: it has no {TRAINING_STATE_FILE} "
            "(checkpoints are the step_<K> directories that --checkpointing_steps writes)."
        )
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, content) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, training_state: dict) -> str:
    """Write `accelerator.save_state` plus `training_state.json` to `output_dir/step_<step>`, atomically.

    Everything is written to `output_dir/.tmp_step_<step>` first (model, optimizer, registered objects such as the
    LR scheduler, every process's RNG states, then the training state); only then is the directory renamed to
    `step_<step>` (`os.replace`, atomic on POSIX). A run killed at any moment leaves either the complete checkpoint
    or none (plus a temporary directory that [`find_latest_checkpoint`] ignores and the next save removes). Call it
    on every process.

    Returns:
        The checkpoint directory.
    """
    output_dir = os.fspath(output_dir)
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f".tmp_{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(os.path.join(temporary, TRAINING_STATE_FILE), training_state)
        _fsync_tree(temporary)
        stale = None
        if os.path.exists(final):  # a re-run of the same step: move the old one aside, then swap
            stale = os.path.join(output_dir, f".old_{CHECKPOINT_PREFIX}{step}")
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
        os.replace(temporary, final)
        descriptor = os.open(output_dir, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # make the rename itself durable
        finally:
            os.close(descriptor)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> list[str]:
    """Delete all but the `keep` newest `step_<K>` checkpoints (None or 0 keeps all); returns the deleted paths."""
    if not keep or keep < 1 or not os.path.isdir(output_dir):
        return []
    steps = sorted((s, n) for n in os.listdir(output_dir) if (s := _checkpoint_step(n)) is not None)
    removed = []
    for _, name in steps[:-keep]:
        path = os.path.join(output_dir, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def remove_stale_temporaries(output_dir: str | os.PathLike) -> None:
    """Clean up after a killed save: remove `.tmp_step_*` (incomplete) directories, and put a `.old_step_K` back as
    `step_K` when the run died between moving the old copy aside and renaming the new one in (else remove it)."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(f".old_{CHECKPOINT_PREFIX}"):
            final = os.path.join(output_dir, name[len(".old_") :])
            if os.path.exists(final):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, final)
        elif name.startswith(f".tmp_{CHECKPOINT_PREFIX}"):
            shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(path: str) -> None:
    """Flush every file below `path` and the directories themselves to disk (durability across power loss)."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        descriptor = os.open(root, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# ------------------------------------------------------------------------------------------------------------------
# Model card
# ------------------------------------------------------------------------------------------------------------------


def _card_training_table(values: dict, metrics: dict) -> dict:
    """This run's column of the model card's training table (keys of `maft_hf.hub.model_card.RELEASED_RECIPE`)."""
    dataset = values.get("dataset_name") or values.get("dataset_path")
    vocabulary = list(values.get("training_vocabulary") or [])
    proposals = values.get("proposal_generator") or f"precomputed column {values.get('proposal_column')!r}"
    table = {
        "dataset": f"{dataset} (split {values.get('train_split')}, {len(vocabulary)} classes"
        + (", zero-shot: unseen classes ignored)" if values.get("zero_shot") else ")"),
        "proposal_generator": f"{proposals} (frozen)",
        "max_train_steps": values.get("max_train_steps"),
        "total_batch_size": values.get("global_batch_size"),
        "optimizer": "AdamW",
        "learning_rate": values.get("learning_rate"),
        "weight_decay": f"{values.get('weight_decay')} (0 on norms)",
        "lr_scheduler": f"poly (power {values.get('lr_power')}, {values.get('lr_warmup_steps') or 0} warmup steps)",
        "max_grad_norm": values.get("max_grad_norm"),
        "input_image_size": values.get("input_image_size"),
        "mask_aware_loss_weight": 1.0,
        "distillation_weight": values.get("distillation_weight"),
        "trained_parameters": f"freeze policy {values.get('freeze_policy')!r}",
        "precision": "fp32" if values.get("mixed_precision") in (None, "no") else values.get("mixed_precision"),
        "seed": values.get("seed"),
        "crop size / short side": f"{values.get('crop_size')} / {values.get('short_side')}",
    }
    for key, value in (metrics or {}).items():
        table[f"final {key}" if not key.startswith(("rank_", "train_")) else key] = (
            round(value, 4) if isinstance(value, float) else value
        )
    return {k: v for k, v in table.items() if v is not None}


def write_model_card(output_dir: str | os.PathLike, args, metrics: dict | None = None) -> str:
    """Write `output_dir/README.md`, the model card of a fine-tuned checkpoint; returns its path.

    Call it after the final `save_pretrained` (the card reads the saved config). `args` is the fine-tuning
    `argparse.Namespace` (or a dict of its fields, plus `training_vocabulary` and `global_batch_size`); `metrics` are
    this run's diagnostics (final loss, rank correlations), listed in the training table. The card is
    [`maft_hf.hub.model_card.make_model_card`] with this run's column filled in.
    """
    values = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    output_dir = os.fspath(output_dir)
    path = os.path.join(output_dir, "README.md")
    config = None
    if os.path.isfile(os.path.join(output_dir, "config.json")):
        from ..model.configuration_maft import MAFTConfig

        config = MAFTConfig.from_pretrained(output_dir)
        values.setdefault("input_image_size", config.vision_config.input_image_size)
    training = _card_training_table(values, metrics or {})
    from ..hub import model_card

    dataset = values.get("dataset_name")
    model_id = values.get("hub_model_id") or os.path.basename(os.path.abspath(output_dir))
    card = model_card.make_model_card(
        model_id=model_id,
        base_model=values.get("model_name_or_path"),
        training=training,
        datasets=[dataset] if dataset and not os.path.isdir(dataset) else [],
        setting="zero_shot" if values.get("zero_shot") else "open_vocabulary",
        config=config,
    )
    card.save(path)
    return path


__all__ = [
    "LABEL_MAPPINGS",
    "AugmentationConfig",
    "AugmentationParams",
    "LabelConverter",
    "MaskAwareStudent",
    "StepBatchSampler",
    "TrainingExamples",
    "TrainingStepOutput",
    "apply_augmentation",
    "average_ranks",
    "check_columns",
    "collate",
    "derived_seed",
    "example_generator",
    "find_latest_checkpoint",
    "generate_proposals",
    "image_class_logits",
    "image_to_tensor",
    "label_to_array",
    "load_model_and_processor",
    "load_training_proposal_generator",
    "load_training_state",
    "make_teacher",
    "mask_aware_entry_count",
    "poly_lr_scheduler",
    "prepare_batch",
    "proposals_from_column",
    "prune_checkpoints",
    "rank_correlation_eval",
    "remove_stale_temporaries",
    "resolve_unseen_classes",
    "resolve_vocabulary",
    "sample_augmentation",
    "save_checkpoint",
    "select_split",
    "spearman_correlation",
    "training_step",
    "validate_training_dataset",
    "write_model_card",
]
