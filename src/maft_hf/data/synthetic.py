"""A tiny synthetic semantic-segmentation dataset of coloured shapes, for tests, examples and smoke-training.

Each image is an outdoor-like scene of the 8 classes of `vocab/synthetic.txt`, each with its own colour and texture,
inside a black frame labelled 255; images are deterministic functions of `(seed, stream, index)`.
"""

from __future__ import annotations

import numpy as np

from ..inference.vocabulary import load_vocabulary
from .labels import IGNORE_INDEX, dataset_info_with_class_names

SYNTHETIC_CLASS_NAMES: list[str] = load_vocabulary("synthetic")
_DESCRIPTION = (
    "maft_hf synthetic segmentation dataset: coloured shapes (sky, grass, water, road, wall, tree, person, car). "
    "Label values index class_names; 255 = unlabelled border."
)


def _resolve_class_names(class_names) -> list[str]:
    if class_names is None:
        return list(SYNTHETIC_CLASS_NAMES)
    names = list(class_names)
    unknown = [n for n in names if n not in SYNTHETIC_CLASS_NAMES]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(
            f"class_names must be distinct names among {SYNTHETIC_CLASS_NAMES}; got {names} (unknown: {unknown})."
        )
    return names


def _disc(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: `image uint8 (size, size, 3)` and `label int64 (size, size)` (indices into
    `SYNTHETIC_CLASS_NAMES`, -1 on the frame); all randomness comes from `rng`."""
    if size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {size}.")
    idx = {name: i for i, name in enumerate(SYNTHETIC_CLASS_NAMES)}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size, 3), dtype=np.float64)
    label = np.full((size, size), -1, dtype=np.int64)

    def paint(region, name, colours):
        image[region] = colours[region]
        label[region] = idx[name]

    # sky: blue gradient above the horizon
    horizon = int(rng.uniform(0.3, 0.55) * size)
    t = (yy / max(horizon, 1)).clip(0, 1)[..., None]
    sky = (1 - t) * np.array([70, 130, 230]) + t * np.array([175, 210, 250])
    paint(yy < horizon, "sky", sky)

    # ground: one or two of grass / water / road, split at a random column
    grounds = list(rng.choice(["grass", "water", "road"], size=2, replace=False))
    split = int(rng.uniform(0.3, 0.7) * size) if rng.random() < 0.7 else size
    textures = {
        "grass": np.array([60, 160, 50]) + rng.normal(0, 14, (size, size, 1)) * np.array([0.4, 1.0, 0.4]),
        "water": np.where(
            (np.sin(yy * 2 * np.pi / 4.0) > 0)[..., None], np.array([25, 95, 185]), np.array([70, 200, 215])
        ),
        "road": np.array([112, 112, 112]) + rng.normal(0, 4, (size, size, 1)),
    }
    ground = yy >= horizon
    paint(ground & (xx < split), grounds[0], textures[grounds[0]])
    paint(ground & (xx >= split), grounds[1], textures[grounds[1]])

    # wall: brick block standing on the horizon
    if rng.random() < 0.5:
        width = rng.uniform(0.2, 0.4) * size
        height = rng.uniform(0.15, 0.3) * size
        x0 = rng.uniform(0, size - width)
        region = (xx >= x0) & (xx < x0 + width) & (yy >= horizon - height) & (yy < horizon + 0.05 * size)
        course = (yy // 4).astype(int)
        mortar = (yy % 4 == 0) | (((xx + 4 * (course % 2)) % 8) == 0)
        brick = np.where(mortar[..., None], np.array([205, 195, 185]), np.array([160, 60, 40]))
        paint(region, "wall", brick)

    # objects: 1-3 of tree / person / car
    objects = list(rng.choice(["tree", "person", "car"], size=int(rng.integers(1, 4)), replace=False))
    for name in objects:
        if name == "tree":
            cy = rng.uniform(horizon - 0.15 * size, horizon + 0.05 * size)
            cx = rng.uniform(0.15, 0.85) * size
            r = rng.uniform(0.08, 0.14) * size
            region = (
                _disc(yy, xx, cy, cx, r, r)
                | _disc(yy, xx, cy + 0.5 * r, cx - 0.6 * r, 0.7 * r, 0.7 * r)
                | _disc(yy, xx, cy + 0.5 * r, cx + 0.6 * r, 0.7 * r, 0.7 * r)
            )
            leaves = np.array([25, 85, 30]) + rng.normal(0, 10, (size, size, 1)) * np.array([0.3, 1.0, 0.3])
            paint(region, "tree", leaves)
        elif name == "person":
            cy = rng.uniform(horizon + 0.15 * size, 0.82 * size)
            cx = rng.uniform(0.1, 0.9) * size
            body = _disc(yy, xx, cy, cx, 0.12 * size, 0.05 * size)
            head = _disc(yy, xx, cy - 0.15 * size, cx, 0.045 * size, 0.045 * size)
            paint(body | head, "person", np.broadcast_to(np.array([232, 182, 140.0]), (size, size, 3)))
        else:
            width, height = rng.uniform(0.25, 0.35) * size, rng.uniform(0.1, 0.15) * size
            x0 = rng.uniform(0.05 * size, 0.95 * size - width)
            bottom = rng.uniform(horizon + height + 0.05 * size, 0.92 * size)
            body = (xx >= x0) & (xx < x0 + width) & (yy >= bottom - height) & (yy < bottom)
            wheel_r = 0.045 * size
            wheels = _disc(yy, xx, bottom, x0 + 0.25 * width, wheel_r, wheel_r) | _disc(
                yy, xx, bottom, x0 + 0.75 * width, wheel_r, wheel_r
            )
            paint(body, "car", np.broadcast_to(np.array([215, 25, 30.0]), (size, size, 3)))
            paint(wheels, "car", np.broadcast_to(np.array([20, 20, 20.0]), (size, size, 3)))

    # unlabelled black frame
    border = max(1, size // 32)
    frame = np.zeros((size, size), dtype=bool)
    frame[:border], frame[-border:], frame[:, :border], frame[:, -border:] = True, True, True, True
    image[frame] = 0
    label[frame] = -1

    image = image + rng.normal(0, 3, image.shape)
    return image.round().clip(0, 255).astype(np.uint8), label


def make_synthetic_dataset(
    num_images: int = 32, image_size: int = 64, seed: int = 0, class_names=None, stream: int = 0
):
    """A `datasets.Dataset` of `"image"` (RGB) and `"label"` (mode "L", 255 = unlabelled) columns; example `i` is
    drawn from `default_rng([seed, stream, i])`. `class_names` (distinct names among `SYNTHETIC_CLASS_NAMES`) is the
    label vocabulary: classes left out are drawn but labelled 255.

    Example:

    ```python
    >>> ds = make_synthetic_dataset(num_images=4, image_size=32)
    >>> ds[0]["image"].size, ds[0]["label"].mode
    ((32, 32), 'L')
    ```"""
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}.")
    names = _resolve_class_names(class_names)
    to_id = np.full(len(SYNTHETIC_CLASS_NAMES) + 1, IGNORE_INDEX, dtype=np.uint8)  # last slot: frame (-1)
    for new_id, name in enumerate(names):
        to_id[SYNTHETIC_CLASS_NAMES.index(name)] = new_id
    images, labels = [], []
    for index in range(num_images):
        image, label = render_scene(np.random.default_rng([seed, stream, index]), image_size)
        images.append(PILImage.fromarray(image))
        labels.append(PILImage.fromarray(to_id[label]))
    features = Features({"image": Image(mode="RGB"), "label": Image(mode="L")})
    info = dataset_info_with_class_names(names, _DESCRIPTION, features)
    return Dataset.from_dict({"image": images, "label": labels}, features=features, info=info)


def make_synthetic_splits(
    num_train: int = 32, num_test: int = 8, image_size: int = 64, seed: int = 0, class_names=None
):
    """A `datasets.DatasetDict` with disjoint `"train"` (stream 0) and `"test"` (stream 1) splits."""
    from datasets import DatasetDict

    return DatasetDict(
        train=make_synthetic_dataset(num_train, image_size, seed, class_names, stream=0),
        test=make_synthetic_dataset(num_test, image_size, seed, class_names, stream=1),
    )


def save_synthetic_dataset(
    path, num_train: int = 32, num_test: int = 8, image_size: int = 64, seed: int = 0, class_names=None
):
    """Build [`make_synthetic_splits`], `save_to_disk(path)` and return it."""
    splits = make_synthetic_splits(num_train, num_test, image_size, seed, class_names)
    splits.save_to_disk(str(path))
    return splits
