"""A tiny synthetic semantic-segmentation dataset of coloured shapes, for tests, examples and smoke-training: outdoor
scenes of the 8 classes of `vocab/synthetic.txt`, each with its own colour and texture, inside a black frame labelled
255; images are deterministic functions of `(seed, stream, index)`."""

from __future__ import annotations

import numpy as np

from ..inference.vocabulary import load_vocabulary
from .labels import IGNORE_INDEX, dataset_info_with_class_names

SYNTHETIC_CLASS_NAMES: list[str] = load_vocabulary("synthetic")
_DESCRIPTION = (
    "maft_hf synthetic segmentation dataset: coloured shapes (sky, grass, water, road, wall, tree, person, car). "
    "Label values index class_names; 255 = unlabelled border."
)


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: `image uint8 (size, size, 3)` and `label int64 (size, size)` (indices into
    `SYNTHETIC_CLASS_NAMES`, -1 on the frame); all randomness comes from `rng`."""
    if size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {size}.")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size, 3), dtype=np.float64)
    label = np.full((size, size), -1, dtype=np.int64)

    def paint(region, name, colours):
        image[region] = colours
        label[region] = SYNTHETIC_CLASS_NAMES.index(name)

    def disc(cy, cx, ry, rx=None):
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / (rx or ry)) ** 2 <= 1.0

    def noisy(colour, std, weights):
        return np.array(colour) + rng.normal(0, std, (size, size, 1)) * np.array(weights)

    # sky: blue gradient above the horizon
    horizon = int(rng.uniform(0.3, 0.55) * size)
    t = (yy / max(horizon, 1)).clip(0, 1)[..., None]
    sky = (1 - t) * np.array([70, 130, 230]) + t * np.array([175, 210, 250])
    paint(yy < horizon, "sky", sky[yy < horizon])

    # ground: one or two of grass / water / road, split at a random column
    grounds = list(rng.choice(["grass", "water", "road"], size=2, replace=False))
    split = int(rng.uniform(0.3, 0.7) * size) if rng.random() < 0.7 else size
    stripes = (np.sin(yy * 2 * np.pi / 4.0) > 0)[..., None]
    textures = {
        "grass": noisy([60, 160, 50], 14, [0.4, 1.0, 0.4]),
        "water": np.where(stripes, np.array([25, 95, 185]), np.array([70, 200, 215])),
        "road": noisy([112, 112, 112], 4, 1.0),
    }
    ground = yy >= horizon
    for region, name in ((ground & (xx < split), grounds[0]), (ground & (xx >= split), grounds[1])):
        paint(region, name, textures[name][region])

    # wall: brick block standing on the horizon
    if rng.random() < 0.5:
        width, height = rng.uniform(0.2, 0.4) * size, rng.uniform(0.15, 0.3) * size
        x0 = rng.uniform(0, size - width)
        region = (xx >= x0) & (xx < x0 + width) & (yy >= horizon - height) & (yy < horizon + 0.05 * size)
        mortar = (yy % 4 == 0) | (((xx + 4 * ((yy // 4).astype(int) % 2)) % 8) == 0)
        paint(region, "wall", np.where(mortar[..., None], np.array([205, 195, 185]), np.array([160, 60, 40]))[region])

    # objects: 1-3 of tree / person / car
    for name in rng.choice(["tree", "person", "car"], size=int(rng.integers(1, 4)), replace=False):
        if name == "tree":
            cy = rng.uniform(horizon - 0.15 * size, horizon + 0.05 * size)
            cx, r = rng.uniform(0.15, 0.85) * size, rng.uniform(0.08, 0.14) * size
            small = 0.7 * r  # two smaller discs below the crown
            region = disc(cy, cx, r) | disc(cy + 0.5 * r, cx - 0.6 * r, small) | disc(cy + 0.5 * r, cx + 0.6 * r, small)
            paint(region, "tree", noisy([25, 85, 30], 10, [0.3, 1.0, 0.3])[region])
        elif name == "person":
            cy, cx = rng.uniform(horizon + 0.15 * size, 0.82 * size), rng.uniform(0.1, 0.9) * size
            body = disc(cy, cx, 0.12 * size, 0.05 * size) | disc(cy - 0.15 * size, cx, 0.045 * size)
            paint(body, "person", [232, 182, 140.0])
        else:
            width, height = rng.uniform(0.25, 0.35) * size, rng.uniform(0.1, 0.15) * size
            x0 = rng.uniform(0.05 * size, 0.95 * size - width)
            bottom = rng.uniform(horizon + height + 0.05 * size, 0.92 * size)
            paint((xx >= x0) & (xx < x0 + width) & (yy >= bottom - height) & (yy < bottom), "car", [215, 25, 30.0])
            wheels = disc(bottom, x0 + 0.25 * width, 0.045 * size) | disc(bottom, x0 + 0.75 * width, 0.045 * size)
            paint(wheels, "car", [20, 20, 20.0])

    # unlabelled black frame
    border = max(1, size // 32)
    frame = np.ones((size, size), dtype=bool)
    frame[border:-border, border:-border] = False
    image[frame], label[frame] = 0, -1
    image = image + rng.normal(0, 3, image.shape)
    return image.round().clip(0, 255).astype(np.uint8), label


def make_synthetic_dataset(
    num_images: int = 32, image_size: int = 64, seed: int = 0, class_names=None, stream: int = 0
):
    """A `datasets.Dataset` of `"image"` (RGB) and `"label"` (mode "L", 255 = unlabelled) columns; example `i` is
    drawn from `default_rng([seed, stream, i])`. `class_names` (distinct names among `SYNTHETIC_CLASS_NAMES`) is the
    label vocabulary: classes left out are drawn but labelled 255."""
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}.")
    names = list(SYNTHETIC_CLASS_NAMES if class_names is None else class_names)
    unknown = [n for n in names if n not in SYNTHETIC_CLASS_NAMES]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(
            f"class_names must be distinct names among {SYNTHETIC_CLASS_NAMES}; got {names} (unknown: {unknown})."
        )
    to_id = np.full(len(SYNTHETIC_CLASS_NAMES) + 1, IGNORE_INDEX, dtype=np.uint8)  # last slot: frame (-1)
    to_id[[SYNTHETIC_CLASS_NAMES.index(name) for name in names]] = np.arange(len(names))
    scenes = [render_scene(np.random.default_rng([seed, stream, i]), image_size) for i in range(num_images)]
    images = [PILImage.fromarray(image) for image, _ in scenes]
    labels = [PILImage.fromarray(to_id[label]) for _, label in scenes]
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
