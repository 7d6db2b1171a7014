"""Synthetic dataset, COCO-Stuff label mapping and the training transforms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import load_from_disk
from reference_augmentation import (
    pad_to_size,
    random_crop,
    random_horizontal_flip,
    resize_shortest_edge,
    train_transform,
)

from maft_hf.data import (
    COCO_STUFF_UNUSED_RAW_IDS,
    SYNTHETIC_CLASS_NAMES,
    check_label_ids,
    coco_stuff_lut,
    coco_stuff_unseen_ids,
    get_class_names,
    make_synthetic_dataset,
    make_synthetic_splits,
    map_labels,
    save_synthetic_dataset,
    to_clip_input,
    zero_shot_ignore,
)
from maft_hf.inference.vocabulary import load_vocabulary, unseen_class_indices

# ----------------------------------------------------------------------------------------------------- synthetic


def _arrays(dataset):
    return [(np.array(ex["image"]), np.array(ex["label"])) for ex in dataset]


def test_synthetic_columns_ids_and_frame():
    ds = make_synthetic_dataset(num_images=12, image_size=48, seed=0)
    assert ds.column_names == ["image", "label"] and len(ds) == 12
    assert SYNTHETIC_CLASS_NAMES == load_vocabulary("synthetic") and len(SYNTHETIC_CLASS_NAMES) == 8
    assert get_class_names(ds) == SYNTHETIC_CLASS_NAMES
    seen = set()
    for ex in ds:
        assert ex["image"].mode == "RGB" and ex["label"].mode == "L"
        assert ex["image"].size == ex["label"].size == (48, 48)
        label = np.array(ex["label"])
        seen |= set(np.unique(label).tolist())
        # the frame (48 // 32 = 1 pixel) is unlabelled and black-ish, the inside is labelled
        assert (label[0] == 255).all() and (label[:, -1] == 255).all()
        assert (label[1:-1, 1:-1] != 255).all()
        assert np.array(ex["image"])[0].mean() < 20
    assert seen <= set(range(8)) | {255}
    assert {0, 1, 2, 3} <= seen  # sky always, and several ground classes over 12 images


def test_synthetic_classes_have_distinct_colours():
    ds = make_synthetic_dataset(num_images=16, image_size=64, seed=1)
    means = {}
    for image, label in _arrays(ds):
        for c in np.unique(label):
            if c != 255:
                means.setdefault(int(c), []).append(image[label == c].mean(0))
    centres = {c: np.mean(v, 0) for c, v in means.items()}
    assert len(centres) == 8
    for a in centres:
        for b in centres:
            if a < b:
                assert np.abs(centres[a] - centres[b]).max() > 15, (SYNTHETIC_CLASS_NAMES[a], SYNTHETIC_CLASS_NAMES[b])


def test_synthetic_determinism_and_streams():
    a = _arrays(make_synthetic_dataset(num_images=4, image_size=32, seed=3))
    b = _arrays(make_synthetic_dataset(num_images=4, image_size=32, seed=3))
    c = _arrays(make_synthetic_dataset(num_images=4, image_size=32, seed=4))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    # example i does not depend on how many images are drawn
    longer = _arrays(make_synthetic_dataset(num_images=6, image_size=32, seed=3))
    assert np.array_equal(longer[2][0], a[2][0])
    splits = make_synthetic_splits(num_train=3, num_test=2, image_size=32, seed=3)
    assert set(splits) == {"train", "test"} and len(splits["train"]) == 3 and len(splits["test"]) == 2
    assert np.array_equal(np.array(splits["train"][0]["image"]), a[0][0])
    assert not np.array_equal(np.array(splits["test"][0]["image"]), a[0][0])


def test_synthetic_class_subset_relabels():
    full = _arrays(make_synthetic_dataset(num_images=4, image_size=32, seed=5))
    sub = _arrays(make_synthetic_dataset(num_images=4, image_size=32, seed=5, class_names=["car", "sky"]))
    for (image_f, label_f), (image_s, label_s) in zip(full, sub):
        assert np.array_equal(image_f, image_s)
        expected = np.full_like(label_f, 255)
        expected[label_f == SYNTHETIC_CLASS_NAMES.index("car")] = 0
        expected[label_f == SYNTHETIC_CLASS_NAMES.index("sky")] = 1
        assert np.array_equal(label_s, expected)
    with pytest.raises(ValueError, match="boat"):
        make_synthetic_dataset(num_images=1, class_names=["sky", "boat"])
    with pytest.raises(ValueError, match="at least 16"):
        make_synthetic_dataset(num_images=1, image_size=8)


def test_save_and_reload_synthetic(tmp_path):
    saved = save_synthetic_dataset(tmp_path / "synth", num_train=2, num_test=1, image_size=32)
    loaded = load_from_disk(str(tmp_path / "synth"))
    assert set(loaded) == {"train", "test"}
    assert get_class_names(loaded) == get_class_names(loaded["test"]) == SYNTHETIC_CLASS_NAMES
    assert np.array_equal(np.array(loaded["train"][1]["label"]), np.array(saved["train"][1]["label"]))


# ----------------------------------------------------------------------------------------------------- labels


def test_coco_stuff_lut():
    lut = coco_stuff_lut()
    names = load_vocabulary("coco_stuff_171")
    assert lut.shape == (256,) and lut.dtype == np.uint8
    mapped = lut[lut != 255]
    assert len(mapped) == 171 == len(names) and sorted(mapped.tolist()) == list(range(171))
    assert all(lut[raw] == 255 for raw in COCO_STUFF_UNUSED_RAW_IDS)
    assert (lut[182:] == 255).all()
    # spot checks: raw value = COCO id - 1
    assert names[lut[0]] == "person"  # COCO id 1
    assert names[lut[12]] == "stop sign"  # COCO id 13 (id 12 is unused)
    assert names[lut[20]] == "cow" and names[lut[147]] == "river" and names[lut[168]] == "tree"
    assert lut[181] == 170 and names[170] == "wood"
    assert lut[91] == 80  # first stuff class (COCO id 92)
    assert coco_stuff_unseen_ids() == unseen_class_indices("coco_stuff")
    assert coco_stuff_lut(65535).dtype == np.uint16
    with pytest.raises(ValueError, match=r"ignore_index must be in \[0, 65535\], got -1"):
        coco_stuff_lut(-1)
    assert len(coco_stuff_unseen_ids()) == 15


def test_map_labels_numpy_and_torch():
    lut = coco_stuff_lut()
    raw = np.array([[0, 11, 12], [181, 255, 200]], dtype=np.uint8)
    expected = np.array([[0, 255, 11], [170, 255, 255]], dtype=np.uint8)
    assert np.array_equal(map_labels(raw, lut), expected)
    out = map_labels(torch.from_numpy(raw), lut)
    assert isinstance(out, torch.Tensor) and torch.equal(out, torch.from_numpy(expected))
    with pytest.raises(ValueError, match="300"):
        map_labels(np.array([300]), lut)
    with pytest.raises(ValueError, match="integers"):
        map_labels(np.array([1.5]), lut)


def test_zero_shot_ignore_and_check_label_ids():
    labels = np.array([[19, 20, 255], [137, 0, 19]], dtype=np.uint8)
    hidden = zero_shot_ignore(labels, coco_stuff_unseen_ids())
    assert hidden.tolist() == [[255, 20, 255], [255, 0, 255]]
    assert labels[0, 0] == 19  # input untouched
    hidden_t = zero_shot_ignore(torch.from_numpy(labels).long(), [20, 0], ignore_index=99)
    assert hidden_t.tolist() == [[19, 99, 255], [137, 99, 19]] and hidden_t.dtype == torch.long
    check_label_ids(labels, 171)
    with pytest.raises(ValueError, match=r"\[171, 200\]"):
        check_label_ids(np.array([0, 171, 200, 255]), 171)
    with pytest.raises(ValueError, match=r"\[-1\]"):
        check_label_ids(torch.tensor([-1, 3]), 8)


# ----------------------------------------------------------------------------------------------------- transforms


def _coded_pair(height, width):
    """Image whose red channel and label both encode the column index, so geometry can be traced."""
    cols = torch.arange(width).expand(height, width)
    image = torch.stack([cols % 250, torch.zeros_like(cols), torch.full_like(cols, 7)]).to(torch.uint8)
    return image, (cols % 250).to(torch.uint8)


def test_resize_shortest_edge_shapes():
    image, label = _coded_pair(30, 40)
    out_image, out_label = resize_shortest_edge(image, label, short_side=60)
    assert out_image.shape == (3, 60, 80) and out_label.shape == (60, 80)
    assert out_image.dtype == torch.uint8 and out_label.dtype == torch.uint8
    # nearest for labels: only existing values appear
    assert set(out_label.unique().tolist()) <= set(label.unique().tolist())
    capped, _ = resize_shortest_edge(image, label, short_side=60, max_size=64)
    assert capped.shape == (3, 48, 64)
    g = torch.Generator().manual_seed(0)
    drawn = {resize_shortest_edge(image, label, short_side=[20, 40], generator=g)[0].shape[1] for _ in range(20)}
    assert drawn == {20, 40}


def test_random_crop_and_padding_values():
    rows, cols = torch.meshgrid(torch.arange(50), torch.arange(30), indexing="ij")
    label = rows * 100 + cols  # int64 ids that encode the position
    image = torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8)
    tops = set()
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        crop_image, crop_label = random_crop(image, label, crop_size=40, generator=g)
        assert crop_image.shape == (3, 40, 30) and crop_label.shape == (40, 30)  # short side kept whole
        top = int(crop_label[0, 0]) // 100
        assert torch.equal(crop_label, label[top : top + 40])  # a window of the input ...
        assert torch.equal(crop_image, image[:, top : top + 40])  # ... the same for image and label
        tops.add(top)
    assert len(tops) > 1
    padded_image, padded_label = pad_to_size(crop_image, crop_label, 40)
    assert padded_image.shape == (3, 40, 40) and padded_label.shape == (40, 40)
    assert (padded_image[:, :, 30:] == 128).all() and (padded_label[:, 30:] == 255).all()
    assert torch.equal(padded_label[:, :30], crop_label) and torch.equal(padded_image[:, :, :30], crop_image)
    with pytest.raises(ValueError, match="crop it first"):
        pad_to_size(image, label, 40)


def test_train_transform_flip_consistency_and_padding():
    image, label = _coded_pair(20, 24)
    flipped_seen = set()
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        out_image, out_label = train_transform(image, label, short_side=20, crop_size=32, generator=g)
        assert out_image.shape == (3, 32, 32) and out_label.shape == (32, 32)
        # padding at bottom/right only, never flipped
        assert (out_label[20:] == 255).all() and (out_label[:, 24:] == 255).all()
        assert (out_image[:, 20:] == 128).all() and (out_image[:, :, 24:] == 128).all()
        content = out_label[:20, :24]
        assert torch.equal(out_image[0, :20, :24], content)  # image and label moved together
        flipped = bool(content[0, 0] == 23)
        assert torch.equal(content[0], torch.arange(24).flip(0) if flipped else torch.arange(24))
        flipped_seen.add(flipped)
        g2 = torch.Generator().manual_seed(seed)
        again = train_transform(image, label, short_side=20, crop_size=32, generator=g2)
        assert torch.equal(again[0], out_image) and torch.equal(again[1], out_label)
    assert flipped_seen == {False, True}
    assert torch.equal(random_horizontal_flip(image, label, p=1.0)[1], label.flip(-1))
    assert torch.equal(random_horizontal_flip(image, label, p=0.0)[0], image)


def test_to_clip_input_matches_reference():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 40, 56), generator=g, dtype=torch.uint8)
    mean = torch.tensor([122.7709383, 116.7460125, 104.09373615]).view(3, 1, 1)
    std = torch.tensor([68.5005327, 66.6321579, 70.323163]).view(3, 1, 1)  # the released CLIP_PIXEL_MEAN/STD
    normalised = ((image.float() - mean) / std)[None]
    expected = F.interpolate(normalised, size=(32, 32), mode="bilinear", align_corners=False)[0]
    out = to_clip_input(image, size=32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    batched = to_clip_input(torch.stack([image, image]), size=32)
    assert batched.shape == (2, 3, 32, 32) and torch.equal(batched[1], out)


def test_transform_errors():
    image, label = _coded_pair(20, 24)
    with pytest.raises(ValueError, match="same size"):
        train_transform(image, label[:, :10])
    with pytest.raises(ValueError, match="same size"):
        random_crop(image, label.T.contiguous(), 8)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        random_horizontal_flip(image[:2], label)
    with pytest.raises(ValueError, match="integer"):
        resize_shortest_edge(image, label.float())
    with pytest.raises(ValueError, match="0..255"):
        to_clip_input(torch.zeros(4, 8, 8))


# ----------------------------------------------------------------------------------------------------- class names


def _tiny(features=None, info=None):
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage

    features = features or Features({"image": Image(), "label": Image()})
    pixel = PILImage.new("L", (2, 2))
    return Dataset.from_dict({"image": [pixel.convert("RGB")], "label": [pixel]}, features=features, info=info)


def test_class_names_are_read_from_features_then_description_then_id2label(tmp_path):
    import json

    from maft_hf.data.labels import dataset_info_with_class_names, dataset_metadata, features_with_class_names

    plain = _tiny()
    assert get_class_names(plain) is None
    # 1. the label feature (what prepare_* write now), also in a DatasetDict
    stored = _tiny(features_with_class_names(plain.features, ["sky", "car"], benchmark={"ignore_index": 255}))
    assert get_class_names(stored) == ["sky", "car"] and dataset_metadata(stored)["benchmark"] == {"ignore_index": 255}
    assert plain.features["label"].id is None  # the input features are not modified
    with pytest.raises(ValueError, match=r"no label column 'segmentation'; they have \['image', 'label'\]"):
        features_with_class_names(plain.features, ["sky"], label_column="segmentation")
    # 2. datasets written before: the description line
    old = _tiny(plain.features, dataset_info_with_class_names(["road", "tree"], "old", plain.features))
    assert get_class_names(old) == ["road", "tree"]
    # 3. an id2label.json beside the saved data (or in a given folder); the stored names win over it
    old.save_to_disk(str(tmp_path / "old"))
    plain.save_to_disk(str(tmp_path / "plain"))
    (tmp_path / "plain" / "id2label.json").write_text(json.dumps({"1": "water", "0": "grass"}))
    (tmp_path / "old" / "id2label.json").write_text(json.dumps({"0": "ignored"}))
    assert get_class_names(load_from_disk(str(tmp_path / "plain"))) == ["grass", "water"]
    assert get_class_names(load_from_disk(str(tmp_path / "old"))) == ["road", "tree"]
    assert get_class_names(plain, data_dir=tmp_path / "plain") == ["grass", "water"]
    (tmp_path / "plain" / "id2label.json").write_text(json.dumps({"0": "grass", "2": "water"}))
    with pytest.raises(ValueError, match=r"keys '0'..'C-1' \(id -> class name\), got \['0', '2'\]"):
        get_class_names(plain, data_dir=tmp_path / "plain")
