"""Peak memory and time of the semantic-map inference on CPU: chunked `semantic_map` vs the naive einsum.

Default case: 847 classes (ADE20K-847) x 300 proposals at 640x640, the largest vocabulary MAFT is evaluated on.
Every method runs in its own fresh Python process, whose peak resident set size (`ru_maxrss`, which counts torch's
CPU allocations, unlike `tracemalloc`) is read after the inputs are built and again after the method ran; the table
reports both and their difference (the memory the method itself needed). Each process saves its map, and the
parent compares them with the naive result.

Usage:

    python scripts/benchmark_inference_memory.py                 # 847 x 300 at 640x640 (about 30 s on 2 cores)
    python scripts/benchmark_inference_memory.py --classes 171 --proposals 100 --size 480
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

GIB = 1024**3
METHODS = ("naive_einsum", "semantic_scores_argmax", "semantic_map")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def worker(args) -> None:
    """Run one method in this (fresh) process and print a JSON line with its peak memory and time."""
    import numpy as np
    import torch

    from maft_hf.inference.semantic_map import semantic_map, semantic_scores

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    logits = 5.0 * torch.randn(args.proposals, args.classes, generator=generator)  # ~ 100 * cos spread
    masks = torch.rand(args.proposals, args.size, args.size, generator=generator)
    before = peak_rss_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        if args.worker == "naive_einsum":
            seg = torch.einsum("nc,nhw->chw", logits.softmax(-1), masks).argmax(0)
        elif args.worker == "semantic_scores_argmax":
            seg = semantic_scores(logits, masks).argmax(0)
        else:
            seg = semantic_map(logits, masks, chunk_classes=args.chunk_classes)
    seconds = time.perf_counter() - start
    after = peak_rss_bytes()
    np.save(args.output, seg.numpy())
    print(json.dumps({"method": args.worker, "inputs": before, "peak": after, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=847)
    parser.add_argument("--proposals", type=int, default=300)
    parser.add_argument("--size", type=int, default=640, help="image side in pixels (square)")
    parser.add_argument("--chunk-classes", type=int, default=None, help="semantic_map class chunk (default: auto)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--target-gib", type=float, default=4.0, help="peak RSS target for semantic_map")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            output = os.path.join(tmp, f"{method}.npy")
            command = [
                sys.executable, __file__, "--worker", method, "--output", output,
                "--classes", str(args.classes), "--proposals", str(args.proposals), "--size", str(args.size),
                "--threads", str(args.threads),
            ]  # fmt: skip
            if args.chunk_classes:
                command += ["--chunk-classes", str(args.chunk_classes)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"{method} failed (exit {result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)
                rows.append({"method": method, "failed": True})
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row["output"] = output
            rows.append(row)

        import numpy as np

        reference = next((np.load(r["output"]) for r in rows if r["method"] == "naive_einsum" and "output" in r), None)
        print(f"semantic map: C={args.classes} classes x N={args.proposals} proposals at {args.size}x{args.size}")
        print(
            f"{'method':<24}{'peak RSS GiB':>14}{'after inputs':>14}{'method extra':>14}{'seconds':>10}{'same map':>10}"
        )
        for row in rows:
            if row.get("failed"):
                print(f"{row['method']:<24}{'failed':>14}")
                continue
            same = "-" if reference is None else f"{(np.load(row['output']) == reference).mean():.4%}"
            print(
                f"{row['method']:<24}{row['peak'] / GIB:>14.3f}{row['inputs'] / GIB:>14.3f}"
                f"{(row['peak'] - row['inputs']) / GIB:>14.3f}{row['seconds']:>10.2f}{same:>10}"
            )
    chunked = next((r for r in rows if r["method"] == "semantic_map" and not r.get("failed")), None)
    if chunked is not None:
        verdict = "OK" if chunked["peak"] / GIB < args.target_gib else "ABOVE TARGET"
        print(f"semantic_map peak RSS {chunked['peak'] / GIB:.3f} GiB vs target {args.target_gib} GiB: {verdict}")


if __name__ == "__main__":
    main()
