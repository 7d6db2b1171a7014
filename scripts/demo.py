#!/usr/bin/env python
"""The main job end to end, offline, on an embedded default (a few minutes on 2 CPU cores):

1. build a tiny random MAFT model (the stand-in for `scripts/convert_clip_checkpoint.py` on real CLIP weights);
2. write the synthetic dataset of coloured shapes (`maft_hf.data.synthetic`) with train and test splits;
3. evaluate it on the test split (mIoU with `kmeans:8` colour-cluster proposals, which need no weights);
4. mask-aware fine-tuning with `scripts/finetune.py` (the same code path as `accelerate launch scripts/finetune.py`);
5. evaluate again, and segment the bundled image `examples/images/scene.png` with the fine-tuned model;
6. write `scene_overlay.png`, `scene_map.png`, `scene.json` (per-class areas) and `metrics.json` to `--output_dir`.

    python scripts/demo.py --output_dir outputs/demo

The numbers show that the whole pipeline runs and learns on toy data; they say nothing about real-image quality.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "images" / "scene.png"
logger = logging.getLogger("maft_hf.demo")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--image", default=str(SCENE), help="Image to segment at the end.")
    parser.add_argument("--proposals", default="kmeans:8", help="Proposal source (see load_proposal_generator).")
    parser.add_argument("--max_train_steps", type=int, default=150)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--num_train", type=int, default=96, help="Synthetic training images.")
    parser.add_argument("--num_test", type=int, default=16, help="Synthetic test images.")
    parser.add_argument("--image_size", type=int, default=64, help="Side of the synthetic images (px).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update_docs", action="store_true", help="Also copy the overlay to docs/scene_overlay.png.")
    return parser.parse_args(argv)


def evaluate(model_dir: str, dataset, class_names, proposals: str) -> dict:
    from maft_hf import MAFTProcessor, MaskAwareCLIPModel, evaluate_segmentation

    model = MaskAwareCLIPModel.from_pretrained(model_dir).eval()
    processor = MAFTProcessor.from_pretrained(model_dir)
    results = evaluate_segmentation(model, processor, dataset, class_names, proposals, progress=False)
    return {
        "mIoU": results["mIoU"],
        "pAcc": results["pAcc"],
        "per_class_iou": dict(zip(class_names, results["per_class_iou"])),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from maft_hf import MAFTProcessor, MaskAwareCLIPModel, load_image, save_segmentation, segment
    from maft_hf.cli import finetune
    from maft_hf.data import save_synthetic_dataset
    from maft_hf.data.labels import get_class_names
    from maft_hf.testing import build_tiny_checkpoint

    torch.manual_seed(args.seed)
    out = pathlib.Path(args.output_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    logger.info("1/5 building a tiny random MAFT model")
    start_dir = build_tiny_checkpoint(out / "tiny-maft-start", seed=args.seed, input_image_size=args.image_size)
    logger.info("2/5 writing the synthetic dataset")
    splits = save_synthetic_dataset(out / "synthetic", args.num_train, args.num_test, args.image_size, args.seed)
    class_names = get_class_names(splits["train"])

    logger.info("3/5 evaluating the starting model on the test split")
    before = evaluate(start_dir, splits["test"], class_names, args.proposals)

    logger.info("4/5 mask-aware fine-tuning for %d steps", args.max_train_steps)
    finetuned_dir = out / "tiny-maft-finetuned"
    finetune.main(
        [
            "--cpu",
            "--offline",
            "--model_name_or_path",
            start_dir,
            "--dataset_path",
            str(out / "synthetic"),
            "--eval_split",
            "test",
            "--proposal_generator",
            args.proposals,
            "--crop_size",
            str(args.image_size),
            "--short_side",
            str(args.image_size),
            "--per_device_train_batch_size",
            "8",
            "--learning_rate",
            str(args.learning_rate),
            "--max_train_steps",
            str(args.max_train_steps),
            "--seed",
            str(args.seed),
            "--output_dir",
            str(finetuned_dir),
        ]
    )
    after = evaluate(str(finetuned_dir), splits["test"], class_names, args.proposals)

    logger.info("5/5 segmenting %s", args.image)
    model = MaskAwareCLIPModel.from_pretrained(finetuned_dir).eval()
    processor = MAFTProcessor.from_pretrained(finetuned_dir)
    image = load_image(args.image)
    (result,) = segment(image, class_names, model, processor, proposal_generator=args.proposals)
    record = save_segmentation(out, pathlib.Path(args.image).stem, image, result["segmentation"], class_names)

    training = json.loads((finetuned_dir / "all_results.json").read_text())
    metrics = {
        "test_mIoU_before": before["mIoU"],
        "test_mIoU_after": after["mIoU"],
        "test_pAcc_before": before["pAcc"],
        "test_pAcc_after": after["pAcc"],
        "training": training,
        "per_class_iou_after": after["per_class_iou"],
        "proposals": args.proposals,
        "segmented_image": args.image,
        "outputs": record,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    if args.update_docs:
        shutil.copy(out / f"{pathlib.Path(args.image).stem}_overlay.png", ROOT / "docs" / "scene_overlay.png")
    print(f"\nsynthetic test mIoU: {before['mIoU']:.1f} before -> {after['mIoU']:.1f} after fine-tuning")
    print(f"overlay: {out / (pathlib.Path(args.image).stem + '_overlay.png')}   metrics: {out / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
