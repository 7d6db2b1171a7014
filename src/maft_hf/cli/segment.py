"""Segment images with any vocabulary: class-id maps, colour overlays and per-class areas, one set per image.

Inputs:

* `--images`: image files and/or folders (a folder contributes its .png/.jpg/... files, sorted). Grayscale, palette
  and RGBA images are converted to RGB (alpha dropped); an unreadable file stops the run with its name.
* `--vocabulary`: a shipped vocabulary name (`ade20k_150`, `coco_stuff_171`, ...), a text file with one class per line
  (`building, edifice` on one line is one class with a synonym), or comma-separated class names. The value is split
  on commas ONLY when it is neither a shipped name nor an existing file, so `"cat,dog"` is two classes; class names
  with synonyms therefore need a file.
* class-agnostic proposals, either `--proposals SPEC`:
    `mask2former:<checkpoint>` / `oneformer:<checkpoint>` (their class scores join MAFT's through the ensemble of
    paper Eq. 9, `--ensemble_weight`), `sam:<checkpoint>` (SAM's automatic masks), `grid:<k>` (k x k blocks, no
    weights; a smoke test only);
  or `--masks` with masks you already have: one file per image (in order), one file for every image, or a folder
  holding `<image stem>.npy` / `<image stem>.png`. A `.npy` is `(N, H, W)` masks or an `(H, W)` integer label map; an
  image file is a single-band label map (one mask per id, 255 = none). Masks whose size differs from the image's
  are resized bilinearly to it (a warning is logged); zero masks is an error.

Outputs in `--output_dir`, per image `<stem>` (repeated stems get `_1`, `_2`, ...): `<stem>_map.png` (class ids,
8-bit for up to 255 classes, else 16-bit), `<stem>_overlay.png` (colours + legend), `<stem>.json` (size and per-class
`pixels`/`fraction`), and `summary.json` (run settings, vocabulary, areas over all images).

Proposals are computed one image at a time and MAFT runs `--batch_size` images per forward pass, so the maps do not
depend on the batch size.

Examples:

    python scripts/segment.py --model org/maft-vitb16 --images photos/ --vocabulary ade20k_150 \\
        --proposals mask2former:facebook/mask2former-swin-base-coco-panoptic --output_dir out/
    python scripts/segment.py --model ./maft-vitb16 --offline --images street.jpg --vocabulary "road,car,tree,sky" \\
        --proposals sam:./sam-vit-base --proposal_option points_per_side=32 --output_dir out/
    python scripts/segment.py --model ./maft-vitb16 --offline --images a.jpg b.jpg --vocabulary my_classes.txt \\
        --masks masks/ --output_dir out/
"""

from __future__ import annotations

import argparse
import logging

import torch
from tqdm.auto import tqdm

from maft_hf import load_image
from maft_hf.hub.loading import load_model_and_processor
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
    parser.add_argument("--model", required=True, help="MAFT checkpoint: a local directory or a Hub id.")
    parser.add_argument("--images", nargs="+", required=True, help="Image files and/or folders of images.")
    parser.add_argument(
        "--vocabulary",
        required=True,
        help="Shipped vocabulary name, text file (one class per line), or comma-separated names ('cat,dog,sky').",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--proposals",
        help="Proposal source: 'mask2former:<ckpt>', 'oneformer:<ckpt>', 'sam:<ckpt>' or 'grid:<k>'.",
    )
    source.add_argument(
        "--masks",
        nargs="+",
        help="Your own masks: one file per image, one file for all, or a folder of <image stem>.npy/.png.",
    )
    parser.add_argument(
        "--proposal_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Option of the proposal source, repeatable (e.g. points_per_side=32 for SAM, num_proposals=100).",
    )
    parser.add_argument("--mask_ignore_index", type=int, default=255, help="Label-map id that is no mask (--masks).")
    parser.add_argument(
        "--ensemble_weight",
        type=float,
        default=DEFAULT_ENSEMBLE_WEIGHT,
        help="Lambda of paper Eq. 9 with the proposal model's class scores (mask2former/oneformer only); 0 = off.",
    )
    parser.add_argument("--output_dir", required=True, help="Folder for the maps, overlays and JSON files.")
    parser.add_argument("--offline", action="store_true", help="Load checkpoints from local files only.")
    parser.add_argument("--batch_size", type=int, default=4, help="Images per MAFT forward pass.")
    parser.add_argument("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
    parser.add_argument("--cache_dir", default=None, help="Directory caching text classifiers between runs.")
    parser.add_argument("--alpha", type=float, default=0.5, help="Opacity of the overlay colours.")
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}.")
    if not 0.0 <= args.ensemble_weight <= 1.0:
        raise ValueError(f"--ensemble_weight must lie in [0, 1] (0 = off), got {args.ensemble_weight}.")
    if args.masks and args.proposal_option:
        raise ValueError("--proposal_option applies to --proposals, not to --masks.")


def build_generator(spec: str, options: dict, offline: bool, device: torch.device):
    kind, _ = parse_proposal_spec(spec)
    if kind != "grid":
        options = {"device": device, **({"local_files_only": True} if offline else {}), **options}
    return load_proposal_generator(spec, **options)


def _mask_size(raw) -> tuple[int, int]:
    if hasattr(raw, "getbands"):
        return raw.height, raw.width
    return tuple(int(side) for side in raw.shape[-2:])


def user_proposals(mask_file, picture, ignore_index: int):
    """Proposals of one image from its mask file, resized to the image (with a warning) when the sizes differ."""
    raw = read_mask_file(mask_file)
    size = (picture.height, picture.width)
    if _mask_size(raw) != size:
        logger.warning("Masks %s are %s, the image is %s: resized bilinearly.", mask_file, _mask_size(raw), size)
    try:
        return proposals_from_user_masks(raw, image_size=size, ignore_index=ignore_index)
    except ValueError as err:
        raise ValueError(f"Mask file {str(mask_file)!r}: {err}") from err


def batch_proposals(pictures, mask_files, generator, ignore_index: int):
    """Proposals of a batch of images: from their mask files, or from the generator one image at a time.

    One at a time because a batched Mask2Former / OneFormer pads the images to one size, which shifts its masks
    slightly: the maps would then depend on `--batch_size`.
    """
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

    model, processor = load_model_and_processor(args.model, args.offline, device=device, allow_clip=False)
    generator = None
    if args.proposals:
        generator = build_generator(args.proposals, parse_proposal_options(args.proposal_option), args.offline, device)
    text_classifier = build_text_classifier(model, processor.tokenizer, names, cache=args.cache_dir)

    records = []
    with tqdm(total=len(image_paths), desc="segment", unit="image") as progress:
        for start in range(0, len(image_paths), args.batch_size):
            paths = image_paths[start : start + args.batch_size]
            masks = mask_files[start : start + args.batch_size] if mask_files is not None else None
            pictures = [load_image(path) for path in paths]
            proposals = batch_proposals(pictures, masks, generator, args.mask_ignore_index)
            results = segment(
                pictures,
                names,
                model,
                processor,
                ensemble_weight=args.ensemble_weight,
                proposals=proposals,
                text_classifier=text_classifier,
                batch_size=args.batch_size,
            )
            for index, (path, picture, item, result) in enumerate(zip(paths, pictures, proposals, results)):
                metadata = {"image": str(path), "num_proposals": item.num_proposals}
                if masks is not None:
                    metadata["masks"] = str(masks[index])
                seg, stem = result["segmentation"], stems[start + index]
                records.append(
                    save_segmentation(args.output_dir, stem, picture, seg, names, alpha=args.alpha, metadata=metadata)
                )
                progress.update(1)
    summary = write_summary(
        args.output_dir,
        records,
        names,
        model=args.model,
        vocabulary=args.vocabulary,
        proposals=args.proposals or "masks",
        ensemble_weight=args.ensemble_weight,
    )
    logger.info("Wrote %d maps, overlays and area files to %s", len(records), args.output_dir)
    return summary
