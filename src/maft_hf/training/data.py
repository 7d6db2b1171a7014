"""Training data: vocabulary and labels, dataset checks, the released augmentation, seeded examples, the step
sampler and batches (proposals at the training resolution, CLIP input at the model's `input_image_size`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import transforms
from ..data.labels import IGNORE_INDEX, check_label_ids, coco_stuff_lut, get_class_names, label_map_array, map_labels
from ..inference.vocabulary import load_vocabulary, parse_vocabulary_argument, unseen_class_ids
from ..model.images import image_size as _image_size_of
from ..model.images import image_to_tensor
from ..model.modeling_maft import pad_proposals

LABEL_MAPPINGS = ("none", "coco_stuff")
COLOR_JITTERS = ("none", "ssd")
resolve_unseen_classes = unseen_class_ids  # sorted indices into `class_names` of the unseen classes of `spec`
label_to_array = label_map_array  # a label map (PIL image, array, nested list or cell) -> `(H, W)` integers


def resolve_vocabulary(spec: str | Sequence[str] | None, dataset=None, label_mapping: str = "none") -> list[str]:
    """The class names of label ids: a shipped vocabulary name, a .txt file, a comma-separated list or a list of
    names; None = the names stored in the dataset's info (`coco_stuff_171` with `label_mapping="coco_stuff"`)."""
    if isinstance(spec, (list, tuple)):
        return load_vocabulary(list(spec))
    if spec is not None:
        return parse_vocabulary_argument(spec)
    names = get_class_names(dataset) if dataset is not None else None
    if names is None and label_mapping == "coco_stuff":
        names = load_vocabulary("coco_stuff_171")
    if names is None:
        raise ValueError(
            "No vocabulary: the dataset stores no class names in its info (see maft_hf.data.labels."
            "dataset_info_with_class_names); pass --vocabulary (a shipped name, a .txt file or a comma-separated list)."
        )
    return load_vocabulary(list(names))


class LabelConverter:
    """Dataset label map -> training ids: `"coco_stuff"` maps raw stuffthingmaps values to the 171 ids; ids are
    checked; unseen classes (zero-shot) become `ignore_index` and seen ids are renumbered ([`training_class_names`])."""

    def __init__(
        self,
        class_names: Sequence[str],
        label_mapping: str = "none",
        unseen_ids: Sequence[int] = (),
        ignore_index: int = IGNORE_INDEX,
    ):
        if label_mapping not in LABEL_MAPPINGS:
            raise ValueError(f"label_mapping must be one of {LABEL_MAPPINGS}, got {label_mapping!r}.")
        self.class_names, self.num_classes = list(class_names), len(class_names)
        if 0 <= ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is a class id of the {self.num_classes}-class vocabulary; use a value "
                f">= {self.num_classes} (e.g. 65535 for vocabularies of more than 255 classes)."
            )
        self.label_mapping, self.ignore_index = label_mapping, int(ignore_index)
        self.unseen_ids = sorted({int(i) for i in unseen_ids})
        if any(not 0 <= i < self.num_classes for i in self.unseen_ids):
            raise ValueError(f"unseen_ids must lie in [0, {self.num_classes - 1}], got {self.unseen_ids}.")
        self.seen_ids = [i for i in range(self.num_classes) if i not in set(self.unseen_ids)]
        if not self.seen_ids:
            raise ValueError("Every class is unseen: the training vocabulary would be empty.")
        self._renumber = np.full(self.num_classes, self.ignore_index, dtype=np.int64)
        self._renumber[self.seen_ids] = np.arange(len(self.seen_ids))

    @property
    def training_class_names(self) -> list[str]:
        return [self.class_names[i] for i in self.seen_ids]

    def __call__(self, label) -> np.ndarray:
        """`(H, W)` integer label map -> `(H, W)` int64 training ids."""
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
    """Split `split` of a `DatasetDict`; a single `Dataset` is itself only when `allow_unsplit` (the training split)."""
    from datasets import DatasetDict, IterableDatasetDict

    if isinstance(dataset, (DatasetDict, IterableDatasetDict, dict)):
        if split not in dataset:
            raise ValueError(f"The dataset has no split {split!r}; available splits: {list(dataset.keys())}.")
        return dataset[split]
    if not allow_unsplit:
        raise ValueError(f"The dataset has no splits (a single Dataset), so it has no split {split!r}.")
    return dataset


def proposals_from_column(value, image_size: tuple[int, int]) -> torch.Tensor:
    """A precomputed-proposal cell (`(N, h, w)` array, nested list or list of PIL masks; bool, 0/1, 0..255 or [0, 1])
    -> `(N, H, W)` float32 probabilities at the image size (see `proposals_from_user_masks`)."""
    from ..proposals.user_masks import proposals_from_user_masks

    pil_masks = isinstance(value, (list, tuple)) and len(value) > 0 and hasattr(value[0], "getbands")
    masks = list(value) if pil_masks else np.asarray(value)
    if not pil_masks and masks.ndim != 3:  # a 2-D array would be read as a label map
        raise ValueError(f"A proposal cell must be a stack of masks (N, H, W), got an array of shape {masks.shape}.")
    return proposals_from_user_masks(masks, image_size=image_size).masks


def _undecoded(dataset, columns):
    """`dataset` with its `Image` columns among `columns` read as files, decoded only when used."""
    from datasets import Image

    for column in columns:
        if isinstance((getattr(dataset, "features", None) or {}).get(column), Image):
            dataset = dataset.cast_column(column, Image(decode=False))
    return dataset


def check_columns(dataset, columns: dict[str, str | None], split: str) -> None:
    """Raise a `ValueError` naming each missing column (`{flag: column}`, None = not used)."""
    names = getattr(dataset, "column_names", None)
    if names is None and isinstance(dataset, list) and dataset:  # rows read from a stream
        names = list(dataset[0])
    if names is None:  # a stream that does not know its columns: checked on its first example
        return
    missing = [f"{flag} {name!r}" for flag, name in columns.items() if name is not None and name not in names]
    if missing:
        raise ValueError(
            f"Split {split!r} has no column {', '.join(missing)}; its columns are {names}. Name the right "
            "columns with --image_column / --label_column / --proposal_column."
        )


def check_example(row, index, image_column, label_column, label_converter, proposal_column=None, split="train") -> bool:
    """Check one row (label map of the image's size and of vocabulary ids, proposal stack); returns whether it has a
    labelled pixel after the label conversion."""
    where = f"example {index} of split {split!r}"
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
        converted = label_converter(label)
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
    return bool((converted != label_converter.ignore_index).any())


def validate_training_dataset(
    dataset,
    image_column: str,
    label_column: str,
    label_converter: LabelConverter,
    proposal_column: str | None = None,
    split: str = "train",
    indices: Sequence[int] | None = None,
) -> tuple[int, int]:
    """[`check_example`] on the rows `indices` (default all) of a split, images undecoded where possible; returns
    `(checked, labelled)`: the number of rows checked and of those with a labelled pixel."""
    if len(dataset) == 0:
        raise ValueError(f"Split {split!r} is empty: fine-tuning needs at least one example.")
    flags = {"--image_column": image_column, "--label_column": label_column, "--proposal_column": proposal_column}
    check_columns(dataset, flags, split)
    view = _undecoded(dataset, [image_column])
    columns = (image_column, label_column, label_converter, proposal_column, split)
    indices = range(len(dataset)) if indices is None else indices
    labelled = [check_example(view[int(index)], int(index), *columns) for index in indices]
    return len(labelled), sum(labelled)


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation (defaults: the released recipe at 640 px); `short_side` may be a tuple to draw from,
    `color_jitter="ssd"` is detectron2's `ColorAugSSDTransform`."""

    crop_size: int = 640
    short_side: int | tuple[int, ...] = 640
    max_size: int | None = transforms.RELEASED_MAX_SIZE
    flip_prob: float = 0.5
    color_jitter: str = "none"


@dataclass(frozen=True)
class ColorJitterParams:
    """The random choices of `ColorAugSSDTransform` for one image (None = step skipped)."""

    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: int | None
    contrast_first: bool


_JITTER_ORDER = {True: ("contrast", "saturation", "hue"), False: ("saturation", "hue", "contrast")}  # by contrast_first


def sample_color_jitter(generator: torch.Generator | None = None) -> ColorJitterParams:
    """Draws of `ColorAugSSDTransform` (defaults as released: brightness +-32, contrast and saturation 0.5..1.5, hue
    +-18 of OpenCV's 180), in its order: brightness coin (and offset), order coin, then each step's coin (and value)
    in application order."""

    def coin() -> bool:
        return bool(torch.randint(2, (1,), generator=generator))

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), dtype=torch.float64, generator=generator))

    brightness = uniform(-32, 32) if coin() else None
    contrast_first = coin()
    draws = {}
    for step in _JITTER_ORDER[contrast_first]:
        if coin():
            draws[step] = int(torch.randint(-18, 19, (1,), generator=generator)) if step == "hue" else uniform(0.5, 1.5)
    return ColorJitterParams(
        brightness, draws.get("contrast"), draws.get("saturation"), draws.get("hue"), contrast_first
    )


def _convert(values: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """detectron2's `convert`: float32 `values * alpha + beta`, clipped to [0, 255], truncated to uint8."""
    alpha, beta = torch.tensor(alpha, dtype=torch.float32), torch.tensor(beta, dtype=torch.float32)
    return (values.float() * alpha + beta).clamp(0, 255).to(torch.uint8)


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit RGB -> HSV (`cvtColor`, H in [0, 180)): integer arithmetic with its rounded division tables."""
    r, g, b = image.long().unbind(0)
    v, vmin = torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)
    diff = v - vmin
    steps = torch.arange(256, dtype=torch.float64).clamp(min=1)
    sdiv = ((255 << 12) / steps).round().long()
    hdiv = ((180 << 12) / (6 * steps)).round().long()
    sdiv[0] = hdiv[0] = 0
    s = (diff * sdiv[v] + (1 << 11)) >> 12
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + (1 << 11)) >> 12
    return torch.stack([torch.where(h < 0, h + 180, h), s, v]).to(torch.uint8)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit HSV -> RGB as its vectorised path computes it (float32, truncated to uint8); bit-identical to
    `cv2.cvtColor(..., COLOR_HSV2BGR)` of opencv-python 5.0 on every HSV triple, except its last `H * W mod 32`
    pixels (its scalar tail rounds instead of truncating: at most 1 level)."""
    h = hsv[0].float() * torch.tensor(6.0 / 180, dtype=torch.float32)
    s, v = (hsv[1:].float() * torch.tensor(1.0 / 255, dtype=torch.float32)).unbind(0)
    sector = h.trunc()
    h = h - sector
    sector = sector - 6 * (sector * torch.tensor(1.0 / 6, dtype=torch.float32)).trunc()
    fused = s.double()  # OpenCV's build fuses `1 - s * h` (one rounding): exact in float64, then float32
    tab = torch.stack([v, v * (1 - s), v * (1 - fused * h).float(), v * (1 - fused * (1 - h)).float()])
    order = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])  # rows r, g, b by sector
    rgb = tab.gather(0, order[:, sector.long()])
    return (rgb * 255).trunc().clamp(0, 255).to(torch.uint8)


def apply_color_jitter(image: torch.Tensor, params: ColorJitterParams) -> torch.Tensor:
    """`ColorAugSSDTransform.apply_image` on a uint8 RGB `(3, H, W)` image (saturation and hue on true colours)."""
    if params.brightness is not None:
        image = _convert(image, beta=params.brightness)
    for step in _JITTER_ORDER[params.contrast_first]:
        value = getattr(params, step)
        if value is None:
            continue
        if step == "contrast":
            image = _convert(image, alpha=value)
            continue
        h, s, v = _rgb_to_hsv(image)
        if step == "saturation":
            s = _convert(s, alpha=value)
        else:
            h = ((h.long() + value) % 180).to(torch.uint8)
        image = _hsv_to_rgb(torch.stack([h, s, v]))
    return image


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
    color: ColorJitterParams | None = None


def sample_augmentation(
    height: int, width: int, config: AugmentationConfig, generator: torch.Generator | None = None
) -> AugmentationParams:
    """Draw short side (if a tuple), crop top, crop left and flip, in this order, for an `height x width` image."""
    short = config.short_side
    if not isinstance(short, int):
        choices = list(short)
        if not choices:
            raise ValueError("short_side must be an int or a non-empty sequence of ints.")
        short = int(choices[int(torch.randint(len(choices), (1,), generator=generator))])
    resized = transforms.shortest_edge_size(height, width, short, config.max_size)
    crop_h, crop_w = min(resized[0], config.crop_size), min(resized[1], config.crop_size)
    top = int(torch.randint(resized[0] - crop_h + 1, (1,), generator=generator))
    left = int(torch.randint(resized[1] - crop_w + 1, (1,), generator=generator))
    flip = bool(torch.rand((), generator=generator) < config.flip_prob)
    return AugmentationParams(tuple(resized), top, left, crop_h, crop_w, flip, config.crop_size)


def _crop_flip_pad(tensor: torch.Tensor, params: AugmentationParams, pad_value: float, color=None) -> torch.Tensor:
    tensor = tensor[..., params.top : params.top + params.crop_height, params.left : params.left + params.crop_width]
    if color is not None:  # after the crop, before flip and padding, as released
        tensor = apply_color_jitter(tensor, color)
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
    """Resize, crop, flip and pad (bottom/right) `image` uint8 `(3, H, W)` (bilinear, pad 128), `label` `(H, W)`
    (nearest, pad `ignore_index`) and optional `proposal_masks` `(N, H, W)` (bilinear, pad 0) -> size `pad_size`."""
    size = params.resized_size
    image = _crop_flip_pad(transforms.resize_image(image, size), params, transforms.IMAGE_PAD_VALUE, params.color)
    label = _crop_flip_pad(transforms.resize_label(label, size), params, ignore_index)
    if proposal_masks is not None:
        masks = transforms.resize_image(proposal_masks.float(), size).clamp(0.0, 1.0)
        proposal_masks = _crop_flip_pad(masks, params, 0.0)
    return image, label, proposal_masks


def derived_seed(*entropy: int) -> int:
    """A 64-bit seed derived from non-negative integers (numpy's `SeedSequence`): independent streams per tuple."""
    if any(int(value) < 0 for value in entropy):
        raise ValueError(f"Seeds must be non-negative integers, got {entropy}.")
    return int(np.random.SeedSequence([int(value) for value in entropy]).generate_state(1, dtype=np.uint64)[0])


def example_generator(seed: int, position: int, stream: int = 0) -> torch.Generator:
    """The generator of the augmentation at stream `position`: `stream` 0 draws the geometry, 2 the colour jitter."""
    return torch.Generator().manual_seed(derived_seed(seed, stream, position))


class TrainingExamples(torch.utils.data.Dataset):
    """Augmented examples addressed by `(position, index)` keys (row `index`, augmentation seeded by `position`):
    `"image"` uint8 `(3, S, S)`, `"label"` int64 `(S, S)`, `"position"`, `"index"`, [`"proposal_masks"` `(N, S, S)`]."""

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
        columns = [column for column in (image_column, label_column, proposal_column) if column]
        self.dataset = dataset.select_columns(columns) if hasattr(dataset, "select_columns") else dataset
        self.label_converter, self.augmentation, self.seed = label_converter, augmentation, int(seed)
        self.image_column, self.label_column, self.proposal_column = image_column, label_column, proposal_column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        position, index = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), int(key))
        return self.example(self.dataset[index], position, index)

    def example(self, row: dict, position: int, index: int) -> dict:
        image = image_to_tensor(row[self.image_column])
        label = torch.from_numpy(self.label_converter(label_to_array(row[self.label_column])))
        size = tuple(image.shape[-2:])
        if tuple(label.shape) != size:
            raise ValueError(f"Example {index}: image {size} and label {tuple(label.shape)} differ in size.")
        masks = None if self.proposal_column is None else proposals_from_column(row[self.proposal_column], size)
        params = sample_augmentation(*size, self.augmentation, example_generator(self.seed, position))
        if self.augmentation.color_jitter == "ssd":
            params = replace(params, color=sample_color_jitter(example_generator(self.seed, position, 2)))
        image, label, masks = apply_augmentation(params, image, label, masks, self.label_converter.ignore_index)
        item = {"image": image, "label": label, "position": position, "index": index}
        return item if masks is None else {**item, "proposal_masks": masks}


class StepBatchSampler(torch.utils.data.Sampler):
    """Deterministic batches of `(position, index)` keys for one process, from `start_step` to `max_steps`: an
    endless stream of seeded shuffled passes; step `s` uses positions `[s * G, (s + 1) * G)` (`G` = global batch),
    micro-step `a` of process `r` the slice at `s * G + (a * num_processes + r) * per_device_batch_size`. So a step's
    data depends only on the seed, the step and `G`, and a resumed run continues exactly."""

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
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index must be in [0, {num_processes - 1}], got {process_index}.")
        if not 0 <= start_step <= max_steps:
            raise ValueError(f"start_step must be in [0, max_steps={max_steps}], got {start_step}.")
        self.num_examples, self.per_device_batch_size = int(num_examples), int(per_device_batch_size)
        self.num_processes, self.process_index = int(num_processes), int(process_index)
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.max_steps, self.start_step, self.seed = int(max_steps), int(start_step), int(seed)
        self._permutation: tuple[int, torch.Tensor] | None = None

    @property
    def global_batch_size(self) -> int:
        return self.per_device_batch_size * self.num_processes * self.gradient_accumulation_steps

    def index_at(self, position: int) -> int:
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


class StreamingExamples(torch.utils.data.IterableDataset):
    """This process's collated micro-batches from a `datasets.IterableDataset`, laid out as [`StepBatchSampler`]:
    every process reads the same seeded shuffled stream in order (position `p` = the `p`-th example read), so a
    resumed run is exact (it re-reads the examples already used). Runs in the training process, not in workers."""

    def __init__(self, examples: TrainingExamples, sampler: StepBatchSampler, buffer_size: int = 1000):
        stream = _undecoded(examples.dataset, [examples.image_column, examples.label_column])  # decode only ours
        self.stream = stream.shuffle(seed=derived_seed(examples.seed, 3) % 2**32, buffer_size=buffer_size)
        self.examples, self.sampler = examples, sampler

    def _rows(self, skip: int):
        position, epoch = 0, 0
        while True:
            self.stream.set_epoch(epoch)
            start = position
            for row in self.stream:
                if position >= skip:
                    yield position, row
                position += 1
            if position == start:
                raise ValueError("The training stream is empty: fine-tuning needs at least one example.")
            epoch += 1

    def __iter__(self):
        sampler, size = self.sampler, self.sampler.global_batch_size
        rows = self._rows(sampler.start_step * size)
        for step in range(sampler.start_step, sampler.max_steps):
            batch = dict(next(rows) for _ in range(size))
            for micro_step in range(sampler.gradient_accumulation_steps):
                positions = sampler.positions(step, micro_step)
                yield collate([self.examples.example(batch[p], p, p) for p in positions])

    def __len__(self) -> int:
        return len(self.sampler)


def collate(examples: Sequence[dict]) -> dict:
    """Stack [`TrainingExamples`] items: `images` uint8 `(B, 3, S, S)`, `labels` `(B, S, S)`, `positions`, `indices`
    `(B,)`, and with proposals `proposal_masks (B, N_max, S, S)` zero-padded plus `proposal_valid_mask (B, N_max)`."""
    batch = {
        "images": torch.stack([example["image"] for example in examples]),
        "labels": torch.stack([example["label"].long() for example in examples]),
        "positions": torch.tensor([int(example["position"]) for example in examples]),
        "indices": torch.tensor([int(example["index"]) for example in examples]),
    }
    if "proposal_masks" in examples[0]:
        masks = [example["proposal_masks"] for example in examples]
        batch["proposal_masks"], batch["proposal_valid_mask"] = pad_proposals(masks)
    return batch


def load_training_proposal_generator(
    spec: str, local_files_only: bool | None = None, num_proposals: int | None = None, device=None
):
    """A frozen proposal generator from a spec, its model on `device` in eval mode without gradients;
    `num_proposals` reaches universal-segmentation kinds and SAM (`max_proposals`)."""
    from ..proposals.factory import load_proposal_generator, parse_proposal_spec

    kind, _ = parse_proposal_spec(spec)
    options = {} if local_files_only is None else {"local_files_only": local_files_only}  # grid/kmeans drop it
    if num_proposals is not None:
        if kind not in ("mask2former", "oneformer", "universal", "sam"):
            raise ValueError(f"num_proposals applies to universal-segmentation and SAM generators, not to {spec!r}.")
        options["max_proposals" if kind == "sam" else "num_proposals"] = num_proposals
    generator = load_proposal_generator(spec, **options)
    model = getattr(generator, "model", None)
    if isinstance(model, nn.Module):
        model.to(device).eval().requires_grad_(False)
    return generator


def generate_proposals(
    proposal_generator, images: torch.Tensor, class_names: Sequence[str] | None = None, text_classifier=None
) -> list[torch.Tensor]:
    """Proposals `(N_i, S, S)` of training crops `images` (uint8 `(B, 3, S, S)`), without gradient; generators with
    `needs_vocabulary` (FreeSeg) also get the vocabulary and its `(C, D)` text classifier."""
    with torch.no_grad():
        if getattr(proposal_generator, "needs_vocabulary", False):
            proposals = proposal_generator(list(images), class_names=class_names, text_classifier=text_classifier)
        elif hasattr(proposal_generator, "generate_prepared"):
            proposals = proposal_generator.generate_prepared(images)
        else:
            proposals = proposal_generator(list(images))
    sizes = [tuple(item.masks.shape[-2:]) for item in proposals]
    if sizes != [tuple(images.shape[-2:])] * images.shape[0]:
        raise ValueError(
            f"The proposal generator returned proposals of sizes {sizes} for {images.shape[0]} images; expected one "
            f"result per image at the crop size {tuple(images.shape[-2:])}."
        )
    return [item.masks.float() for item in proposals]


def prepare_batch(
    batch: dict,
    input_image_size: int,
    proposal_generator=None,
    image_mean: Sequence[float] = transforms.CLIP_MEAN,
    image_std: Sequence[float] = transforms.CLIP_STD,
    device: torch.device | str | None = None,
    class_names: Sequence[str] | None = None,
    text_classifier: torch.Tensor | None = None,
) -> dict:
    """Model inputs of a [`collate`]d batch on `device`: `pixel_values (B, 3, s, s)`, `proposal_masks (B, N, S, S)`
    (the batch's own, else from `proposal_generator`), `proposal_valid_mask (B, N)` and `labels (B, S, S)`."""
    device = torch.device(device) if device is not None else batch["images"].device
    images = batch["images"].to(device)
    if "proposal_masks" in batch:
        masks, valid = batch["proposal_masks"].to(device), batch["proposal_valid_mask"].to(device)
    elif proposal_generator is None:
        raise ValueError("The batch carries no proposals: pass a proposal_generator (or use a proposal column).")
    else:
        proposals = generate_proposals(proposal_generator, images, class_names, text_classifier)
        masks, valid = pad_proposals([m.to(device) for m in proposals])
    return {
        "pixel_values": transforms.to_clip_input(images, input_image_size, image_mean, image_std),
        "proposal_masks": masks,
        "proposal_valid_mask": valid,
        "labels": batch["labels"].to(device),
    }
