"""Segment images with any vocabulary: class-id maps, colour overlays and per-class areas, one set per image.

* `--images`: image files and/or folders (a folder gives its image files, sorted); images are converted to RGB.
* `--vocabulary`: a shipped name (`ade20k_150`, ...), a file with one class per line (`building, edifice` is one class
  with a synonym), or comma-separated names (`"cat,dog"`; split only when it is neither a shipped name nor a file).
* proposals: `--proposals mask2former:<ckpt>` / `oneformer:<ckpt>` (their class scores join MAFT's by paper Eq. 9,
  `--ensemble_weight`), `sam:<ckpt>`, `grid:<k>` / `kmeans:<k>` (no weights); or `--masks`: one file per image, one
  file for all, or a folder of `<image stem>.npy|.png` (`(N, H, W)` masks or an `(H, W)` label map, 255 = none;
  resized to the image with a warning when the sizes differ).

Outputs in `--output_dir`, per image `<stem>` (repeats get `_1`, `_2`, ...): `<stem>_map.png` (class ids, 8-bit up to
255 classes, else 16-bit), `<stem>_overlay.png`, `<stem>.json` (per-class `pixels`/`fraction`), and `summary.json`.
Proposals are computed one image at a time and MAFT runs `--batch_size` images per pass: maps do not depend on it.

    maft-segment --model org/maft-vitb16 --images photos/ --vocabulary ade20k_150 \\
        --proposals mask2former:facebook/mask2former-swin-base-coco-panoptic --output_dir out/
    maft-segment --model ./maft-vitb16 --offline --images street.jpg --vocabulary "road,car,tree,sky" \\
        --proposals sam:./sam-vit-base --proposal_option points_per_side=32 --output_dir out/
"""

from __future__ import annotations

import argparse
import logging

import torch
from tqdm.auto import tqdm

from maft_hf import MAFTProcessor, MaskAwareCLIPModel, load_image
from maft_hf.inference.outputs import (
    find_images,
    find_mask_files,
    parse_vocabulary_argument,
    read_mask_file,
    save_segmentation,
    unique_stems,
    write_summary,
)
from maft_hf.inference.pipeline import segment
from maft_hf.inference.semantic_map import DEFAULT_ENSEMBLE_WEIGHT
from maft_hf.inference.text_classifier import build_text_classifier
from maft_hf.proposals import load_proposal_generator, proposals_from_user_masks
from maft_hf.proposals.factory import parse_proposal_options, parse_proposal_spec

logger = logging.getLogger("maft_hf.segment")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", required=True, help="MAFT checkpoint: a local directory or a Hub id.")
    add("--images", nargs="+", required=True, help="Image files and/or folders of images.")
    add("--vocabulary", required=True, help="Shipped name, file (one class per line) or comma-separated names.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--proposals", help="'mask2former:<ckpt>', 'oneformer:<ckpt>', 'sam:<ckpt>' or 'grid:<k>'.")
    source.add_argument("--masks", nargs="+", help="One mask file per image, one for all, or a folder.")
    add("--proposal_option", action="append", default=[], metavar="KEY=VALUE", help="Proposal option, repeatable.")
    add("--mask_ignore_index", type=int, default=255, help="Label-map id that is no mask (--masks).")
    add("--ensemble_weight", type=float, default=DEFAULT_ENSEMBLE_WEIGHT, help="Lambda of paper Eq. 9; 0 = off.")
    add("--output_dir", required=True, help="Folder for the maps, overlays and JSON files.")
    add("--offline", action="store_true", help="Load checkpoints from local files only.")
    add("--batch_size", type=int, default=4, help="Images per MAFT forward pass.")
    add("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
    add("--cache_dir", default=None, help="Directory caching text classifiers between runs.")
    add("--alpha", type=float, default=0.5, help="Opacity of the overlay colours.")
    add("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}.")
    if not 0.0 <= args.ensemble_weight <= 1.0:
        raise ValueError(f"--ensemble_weight must lie in [0, 1] (0 = off), got {args.ensemble_weight}.")
    if args.masks and args.proposal_option:
        raise ValueError("--proposal_option applies to --proposals, not to --masks.")


def load_model(name: str, offline: bool, device: torch.device):
    try:
        model = MaskAwareCLIPModel.from_pretrained(name, local_files_only=offline)
        processor = MAFTProcessor.from_pretrained(name, local_files_only=offline)
    except OSError as err:
        raise ValueError(f"Cannot load the MAFT checkpoint {name!r}: {err}") from err
    return model.to(device).eval(), processor


def build_generator(spec: str, options: dict, offline: bool, device: torch.device):
    if parse_proposal_spec(spec)[0] != "grid":
        options = {"device": device, **({"local_files_only": True} if offline else {}), **options}
    return load_proposal_generator(spec, **options)


def user_proposals(mask_file, picture, ignore_index: int):
    """Proposals of one image from its mask file, resized to the image (with a warning) when the sizes differ."""
    raw = read_mask_file(mask_file)
    size = (picture.height, picture.width)
    raw_size = (raw.height, raw.width) if hasattr(raw, "getbands") else tuple(int(s) for s in raw.shape[-2:])
    if raw_size != size:
        logger.warning("Masks %s are %s, the image is %s: resized bilinearly.", mask_file, raw_size, size)
    try:
        return proposals_from_user_masks(raw, image_size=size, ignore_index=ignore_index)
    except ValueError as err:
        raise ValueError(f"Mask file {str(mask_file)!r}: {err}") from err


def batch_proposals(pictures, mask_files, generator, ignore_index: int):
    """Proposals of a batch: from mask files, or the generator one image at a time (a batched Mask2Former pads the
    images to one size, which shifts its masks: maps would depend on `--batch_size`)."""
    if mask_files is not None:
        return [user_proposals(mask_file, picture, ignore_index) for mask_file, picture in zip(mask_files, pictures)]
    return [generator([picture])[0] for picture in pictures]


def main(argv: list[str] | None = None) -> dict:
    """Run the command line; returns the summary written to `summary.json`."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=args.log_level)
    check_args(args)
    names = parse_vocabulary_argument(args.vocabulary)
    image_paths = find_images(args.images)
    stems = unique_stems(image_paths)
    mask_files = find_mask_files(args.masks, image_paths) if args.masks else None
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    logger.info("%d images, %d classes, device %s", len(image_paths), len(names), device)

    model, processor = load_model(args.model, args.offline, device)
    generator = None
    if args.proposals:
        generator = build_generator(args.proposals, parse_proposal_options(args.proposal_option), args.offline, device)
    text_classifier = build_text_classifier(model, processor.tokenizer, names, cache=args.cache_dir)

    records = []
    for start in tqdm(range(0, len(image_paths), args.batch_size), desc="segment", unit="batch"):
        paths = image_paths[start : start + args.batch_size]
        masks = mask_files[start : start + args.batch_size] if mask_files is not None else None
        pictures = [load_image(path) for path in paths]
        proposals = batch_proposals(pictures, masks, generator, args.mask_ignore_index)
        results = segment(
            pictures, names, model, processor, ensemble_weight=args.ensemble_weight, proposals=proposals,
            text_classifier=text_classifier, batch_size=args.batch_size,
        )  # fmt: skip
        for index, (path, picture, item, result) in enumerate(zip(paths, pictures, proposals, results)):
            metadata = {"image": str(path), "num_proposals": item.num_proposals}
            if masks is not None:
                metadata["masks"] = str(masks[index])
            seg, stem = result["segmentation"], stems[start + index]
            records.append(
                save_segmentation(args.output_dir, stem, picture, seg, names, alpha=args.alpha, metadata=metadata)
            )
    summary = write_summary(
        args.output_dir, records, names, model=args.model, vocabulary=args.vocabulary,
        proposals=args.proposals or "masks", ensemble_weight=args.ensemble_weight,
    )  # fmt: skip
    logger.info("Wrote %d maps, overlays and area files to %s", len(records), args.output_dir)
    return summary
