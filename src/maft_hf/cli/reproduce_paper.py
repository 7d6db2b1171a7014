"""Reproduce the paper's tables from the authors' released files with one command (docs/evaluation.md).

    maft-reproduce-paper --checkpoint MAFT_Vitb.pt --clip openai/clip-vit-base-patch16 \\
        --data_root datasets --output_dir reproduce

It converts the released checkpoint and its FreeSeg proposal generator (`maft-convert-official-checkpoint`),
prepares every benchmark of paper Tab. 3 from the official releases under `--data_root` (`maft-prepare-benchmark`),
evaluates each one as the authors' code does (FreeSeg proposals, released pre-processing, no ensemble) and writes
`<output_dir>/results.md` beside the paper's numbers. `--zero_shot_checkpoint` adds the zero-shot COCO-Stuff row of
Tab. 1 / Tab. 2. Started again, it reuses what is converted and finished, and the evaluations resume.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from . import convert_official_checkpoint, evaluate, prepare_benchmark
from .arguments import add_freeseg_option

logger = logging.getLogger("maft_hf.reproduce_paper")
TABLE3 = ("ade20k_847", "ade20k_150", "pascal_context_459", "pascal_context_59", "pascal_voc_20")
ZERO_SHOT = "coco_stuff_zero_shot"
PREPARED_AS = {ZERO_SHOT: "coco_stuff_171"}  # the zero-shot benchmark reads the COCO-Stuff 171 labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--checkpoint", help="The released open-vocabulary MAFT checkpoint (.pth).")
    add("--zero_shot_checkpoint", help="A released / own checkpoint trained on the 156 seen classes.")
    add("--clip", required=True, help="The CLIP checkpoint the release was fine-tuned from.")
    add("--data_root", default="datasets", help="The official releases (see docs/evaluation.md).")
    add("--prepared_root", default=None, help="Prepared datasets (default: <output_dir>/data).")
    add("--output_dir", required=True)
    add("--benchmarks", nargs="+", default=list(TABLE3), choices=TABLE3, help="Tab. 3 subset.")
    add("--ade847_id_map", default=None, help="ADE20K-847 id table (see maft-prepare-benchmark).")
    add_freeseg_option(parser)
    add("--batch_size", type=int, default=1, help="Images per forward pass (the release: 1).")
    add("--max_samples", type=int, default=None, help="Evaluate only the first N images (a check).")
    add("--offline", action="store_true", help="Use local files and the Hub cache only.")
    add("--cpu", action="store_true", help="Run on CPU even when a GPU is present.")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.zero_shot_checkpoint:
        raise ValueError("Nothing to reproduce: pass --checkpoint (Tab. 3) and/or --zero_shot_checkpoint (Tab. 1).")
    return args


def convert(args, checkpoint: str, output_dir: Path) -> tuple[str, str]:
    """The released file -> (MAFT checkpoint folder, FreeSeg generator folder); reused when already there."""
    generator_dir = output_dir / "freeseg"
    if not (output_dir / "config.json").is_file() or not (generator_dir / "config.json").is_file():
        convert_official_checkpoint.main(
            ["--checkpoint", checkpoint, "--clip", args.clip, "--output_dir", str(output_dir)]
            + ["--freeseg_output_dir", str(generator_dir)]
            + [f"--freeseg_option={option}" for option in args.freeseg_option]
            + ["--local_files_only"] * args.offline
        )
    if not (generator_dir / "config.json").is_file():
        raise ValueError(
            f"{checkpoint} holds no FreeSeg generator, so the released proposals are not available; the paper's "
            "numbers need them (evaluate with another source through maft-evaluate instead)."
        )
    return str(output_dir), str(generator_dir)


def prepared(args, benchmark: str) -> str:
    """The prepared dataset folder of `benchmark`, converted from `--data_root` when missing."""
    name = PREPARED_AS.get(benchmark, benchmark)
    folder = Path(args.prepared_root or Path(args.output_dir) / "data") / name
    if not (folder / "benchmark.json").is_file():
        logger.info("Preparing %s from %s", name, args.data_root)
        argv = ["--benchmark", name, "--data_root", args.data_root, "--output_dir", str(folder)]
        if name == "ade20k_847" and args.ade847_id_map:
            argv += ["--ade847_id_map", args.ade847_id_map]
        prepare_benchmark.main(argv)
    return str(folder)


def evaluate_released(args, model: str, generator: str, benchmark: str) -> str:
    """Evaluate one benchmark with the released settings; returns its results.json (reused when complete)."""
    output_dir = Path(args.output_dir) / "eval" / benchmark
    results = output_dir / "results.json"
    if not results.is_file():
        proposals = f"freeseg:{generator}"
        print(f"{benchmark}: proposals {proposals}, preprocessing released, ensemble weight 0", flush=True)
        evaluate.main(
            ["--model", model, "--benchmark", benchmark, "--dataset_path", prepared(args, benchmark)]
            + ["--proposals", proposals, "--preprocessing", "released", "--ensemble_weight", "0"]
            + ["--batch_size", str(args.batch_size), "--output_dir", str(output_dir), "--no_progress"]
            + ["--max_samples", str(args.max_samples)] * (args.max_samples is not None)
            + ["--offline"] * args.offline
            + ["--cpu"] * args.cpu
        )
    return str(results)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the command line; returns the combined `results.json` records."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level="INFO")
    out = Path(args.output_dir)
    runs = []
    if args.checkpoint:
        model, generator = convert(args, args.checkpoint, out / "model")
        runs += [evaluate_released(args, model, generator, benchmark) for benchmark in args.benchmarks]
    if args.zero_shot_checkpoint:
        model, generator = convert(args, args.zero_shot_checkpoint, out / "model-zero-shot")
        runs.append(evaluate_released(args, model, generator, ZERO_SHOT))
    records = evaluate.main(["--combine_results", *runs, "--output_dir", str(out)])
    (out / "runs.json").write_text(json.dumps(runs, indent=2))
    print((out / "results.md").read_text())
    return records
