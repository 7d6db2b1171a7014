#!/usr/bin/env python
"""Check that mask-aware fine-tuning learns, offline, in about a minute on CPU.

Builds the synthetic dataset (coloured-shape scenes), a tiny random MAFT checkpoint and (optionally) a tiny random
Mask2Former in a work directory, runs `scripts/finetune.py` on them and prints, for the held-out test split, the
mask-aware loss and the rank correlation between each proposal's class score and its IoU with that class (see
`maft_hf.training.diagnostics.rank_correlation_eval`) for the starting and the fine-tuned model, plus the training-loss trend.
Exits with status 1 when the loss does not fall or the correlation does not rise.

    python scripts/check_finetune_learns.py                       # grid proposals, 60 steps
    python scripts/check_finetune_learns.py --proposals kmeans:6 --steps 200 --num_train 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default=None, help="Where to build the assets and write the run (default: temp).")
    parser.add_argument("--proposals", default="grid:4", help="'grid:<k>', 'kmeans:<k>' or 'mask2former' (tiny).")
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps.")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Learning rate (tiny model: 1e-3).")
    parser.add_argument("--batch_size", type=int, default=4, help="Global batch size (one process).")
    parser.add_argument("--num_train", type=int, default=64, help="Synthetic training images.")
    parser.add_argument("--num_test", type=int, default=16, help="Synthetic held-out images.")
    parser.add_argument("--image_size", type=int, default=64, help="Synthetic image side (= crop size).")
    parser.add_argument("--freeze_policy", default="released", choices=["released", "paper", "all"])
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from maft_hf.data import save_synthetic_dataset
    from maft_hf.testing import build_tiny_checkpoint, build_tiny_mask2former

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="maft_check_"))
    work.mkdir(parents=True, exist_ok=True)
    data, model, output = work / "synthetic", work / "tiny-maft", work / "run"
    save_synthetic_dataset(data, args.num_train, args.num_test, image_size=args.image_size, seed=args.seed)
    build_tiny_checkpoint(model, seed=args.seed)
    proposals = args.proposals
    if proposals == "mask2former":
        proposals = f"mask2former:{build_tiny_mask2former(work / 'mask2former', image_size=args.image_size)}"

    from maft_hf.cli import finetune

    metrics = finetune.main([
        "--cpu", "--model_name_or_path", str(model), "--dataset_path", str(data), "--eval_split", "test",
        "--proposal_generator", proposals, "--crop_size", str(args.image_size), "--short_side", str(args.image_size),
        "--per_device_train_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
        "--max_train_steps", str(args.steps), "--freeze_policy", args.freeze_policy, "--seed", str(args.seed),
        "--output_dir", str(output),
    ])  # fmt: skip
    history = json.loads((output / "train_losses.json").read_text())
    window = max(1, min(10, len(history) // 4))
    first = sum(r["mask_aware_loss"] for r in history[:window]) / window
    last = sum(r["mask_aware_loss"] for r in history[-window:]) / window
    rows = [
        ("held-out mask-aware loss", metrics["eval_mask_aware_loss_start"], metrics["eval_mask_aware_loss_final"]),
        ("held-out rank correlation", metrics["rank_correlation_start"], metrics["rank_correlation_final"]),
        (f"training mask-aware loss (mean of {window} steps)", first, last),
    ]
    print(f"\n{'':48s} {'start':>10s} {'final':>10s}")
    for name, start, final in rows:
        print(f"{name:48s} {start:10.5f} {final:10.5f}")
    print(f"\nrun: {output}")
    learned = rows[0][2] < rows[0][1] and rows[1][2] > rows[1][1]
    print("OK: the mask-aware loss falls and the rank correlation rises." if learned else "NOT LEARNING")
    return 0 if learned else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
