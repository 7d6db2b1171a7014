#!/usr/bin/env python
"""Time and peak memory of the FreeSeg proposal generator beside IP-CLIP, on CPU (or CUDA), random weights.

* FreeSeg at its released size (DeepLab ResNet-101, 256-wide MSDeformAttn pixel decoder with 6 encoder layers, text
  interaction, 10 masked-attention decoder layers, 100 queries, 512-d text) on one 640x853 image (zero-padded to
  640x864) with a `--num_classes` vocabulary (171, COCO-Stuff's, by default): `FreeSegProposals.propose_on_canvas`,
  i.e. normalise + pad, the forward pass, and the 100 masks upsampled to the canvas with a sigmoid (what IP-CLIP
  consumes);
* IP-CLIP (`MaskAwareCLIPVisionModel`, ViT-B/16, 480 px input, mask-aware from layer 8) on one image with N = 100
  proposal masks, as `scripts/benchmark.py` measures it.

Timings are the best of `--repeats` runs taken round-robin after one warm-up each. Peak memory on CPU is the growth of
the resident set of a fresh subprocess over one call (the kernel's peak-RSS mark, reset after the model is built), on
CUDA `torch.cuda.max_memory_allocated`, as `scripts/benchmark.py` does.

    python scripts/benchmark_freeseg.py --quick    # one timed run each
    python scripts/benchmark_freeseg.py --output_json freeseg_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch
from benchmark import peak_growth, run_memory_probe, time_round_robin  # scripts/benchmark.py

VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="One timed run per model.")
    parser.add_argument("--repeats", type=int, default=None, help="Timed runs per model (default 3, quick 1).")
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--num_classes", type=int, default=171)
    parser.add_argument("--num_proposals", type=int, default=100, help="Masks given to IP-CLIP.")
    parser.add_argument("--clip_size", type=int, default=480)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no_memory", action="store_true", help="Skip the peak-memory measurements.")
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--_memory_probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


def build_job(args, name: str):
    """A no-argument callable running one model on inputs made beforehand."""
    torch.manual_seed(0)
    if name == "freeseg":
        from maft_hf.proposals.freeseg import FreeSegConfig, FreeSegModel, FreeSegProposals

        generator = FreeSegProposals(FreeSegModel(FreeSegConfig()).eval(), device=args.device)
        image = torch.randint(0, 256, (3, args.height, args.width), dtype=torch.uint8)
        classifier = torch.nn.functional.normalize(torch.randn(args.num_classes, 512), dim=-1)
        names = [f"class{i}" for i in range(args.num_classes)]
        return lambda: generator.propose_on_canvas([image], class_names=names, text_classifier=classifier)
    from maft_hf import MaskAwareCLIPVisionConfig, MaskAwareCLIPVisionModel

    config = MaskAwareCLIPVisionConfig(**VIT_B16, image_size=224, input_image_size=args.clip_size, mask_start_layer=8)
    model = MaskAwareCLIPVisionModel(config).to(args.device).eval()
    pixels = torch.randn(1, 3, args.clip_size, args.clip_size, device=args.device)
    masks = torch.rand(1, args.num_proposals, args.clip_size, args.clip_size, device=args.device)
    return lambda: model(pixels, proposal_masks=masks, return_patch_tokens=False)


def time_jobs(args, jobs):
    """Best-of-`--repeats` seconds per job, taken round-robin after one warm-up each (as scripts/benchmark.py)."""
    return time_round_robin({name: (fn, {}) for name, fn in jobs.items()}, args.repeats, args.device)


def memory_probe(spec: str) -> None:
    """In a subprocess: one call of one model; print the peak memory growth in bytes."""
    spec = json.loads(spec)
    args = parse_args(spec["argv"])
    print(peak_growth(build_job(args, spec["name"]), args.device))


def peak_memory(argv, name):
    return run_memory_probe(__file__, {"argv": argv, "name": name})


def fmt_bytes(value):
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args._memory_probe:
        memory_probe(args._memory_probe)
        return None
    labels = {
        "freeseg": f"FreeSeg R101 {args.height}x{args.width}, K={args.num_classes}",
        "ipclip": f"IP-CLIP ViT-B/16 {args.clip_size}px, N={args.num_proposals}",
    }
    seconds = time_jobs(args, {name: build_job(args, name) for name in labels})
    memory = {name: None for name in labels}
    if not args.no_memory:
        probe_argv = list(argv)
        if "--output_json" in probe_argv:  # the probes report on stdout
            index = probe_argv.index("--output_json")
            del probe_argv[index : index + 2]
        probe_argv = [a for a in probe_argv if not a.startswith("--output_json=")]
        memory = {name: peak_memory(probe_argv, name) for name in labels}
    report = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "seconds": seconds,
        "peak_memory_bytes": memory,
        "time_ratio_freeseg_over_ipclip": seconds["freeseg"] / seconds["ipclip"],
    }
    if memory["freeseg"] and memory["ipclip"]:
        report["memory_ratio_freeseg_over_ipclip"] = memory["freeseg"] / memory["ipclip"]
    for name, label in labels.items():
        print(f"{label:<45} {seconds[name]:8.2f} s   peak {fmt_bytes(memory[name])}")
    print(f"FreeSeg / IP-CLIP: time x{report['time_ratio_freeseg_over_ipclip']:.2f}", end="")
    if "memory_ratio_freeseg_over_ipclip" in report:
        print(f", memory x{report['memory_ratio_freeseg_over_ipclip']:.2f}")
    else:
        print()
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
