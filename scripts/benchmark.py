#!/usr/bin/env python
"""Speed, memory and FLOPs of IP-CLIP against plain CLIP and against the crop baseline, measured side by side.

For CLIP ViT-B/16 shapes with random weights (real shapes, no download) at 480 px:

* plain `CLIPVisionModel` on the image (no masks; position embeddings interpolated to 480 px);
* IP-CLIP (`MaskAwareCLIPVisionModel`, the fast split form, patch rows of the last layer skipped as in
  `get_mask_features`) at N = 10, 100, 300 proposals;
* the crop baseline: N crops of 224 px through plain CLIP at its native size, batched in chunks of at most
  `--max_crops_per_run` crops (the time of cutting and resizing crops is not counted, which favours the baseline;
  its time is the chunk's time times the number of chunks, its peak memory that of one chunk);
* FLOPs from `torch.utils.flop_counter` (counted with the eager attention, since the CPU SDPA kernels are not
  registered with the counter; matmul FLOPs are the same);
* training-step throughput (images per second of a full MAFT step: student with proposals, student and frozen
  teacher without, mask-aware + self-distillation loss, backward, AdamW) for a tiny and a base model.

Every timing is the best of `--repeats` runs taken round-robin over all configurations, so machine noise hits all
of them alike and the minimum filters most of it; ratios are computed from figures of the same run. On CPU the crop
baseline is timed on at most `--max_crops_per_run` crops (default 100, quick 10) and scaled linearly, which is exact
up to noise since the crops are independent. Peak memory on CPU is the growth of the
resident set of a fresh subprocess over one forward (the kernel's peak-RSS mark, reset after the models are built),
on CUDA `torch.cuda.max_memory_allocated`.

    python scripts/benchmark.py --quick            # < 2 minutes on 2 CPU cores
    python scripts/benchmark.py --output_json benchmark.json
    python scripts/benchmark.py --device cuda --dtype fp16 --batch_sizes 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, CLIPVisionModel

from maft_hf import MaskAwareCLIPVisionConfig, MaskAwareCLIPVisionModel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, patch_size=16)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Batch 1, fewer repeats, crops measured at N <= 100.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=None, help="Default: 1 8 (quick: 1).")
    parser.add_argument("--num_proposals", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument("--image_size", type=int, default=480)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--mask_start_layer", type=int, default=8)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attn_implementation", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model first.")
    parser.add_argument("--repeats", type=int, default=None, help="Timed runs per configuration (default 5, quick 2).")
    parser.add_argument(
        "--max_crops_per_run",
        type=int,
        default=None,
        help="Crop baselines with more crops are timed on this many and scaled linearly, which is "
        "exact up to noise since the crops are independent (default on CPU: 100, quick: 10; "
        "unlimited on GPU).",
    )
    parser.add_argument("--no_memory", action="store_true", help="Skip the peak-memory measurements.")
    parser.add_argument("--no_training", action="store_true", help="Skip the training-step throughput.")
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--_memory_probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [1] if args.quick else [1, 8]
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.max_crops_per_run is None and args.device == "cpu":
        args.max_crops_per_run = 10 if args.quick else 100
    return args


# --------------------------------------------------------------------------------------------------------------
def build_models(args, attn_implementation=None):
    """IP-CLIP at `image_size` and plain CLIP sharing its weights (224 px position grid, as a real checkpoint)."""
    attn = attn_implementation or args.attn_implementation
    torch.manual_seed(0)
    config = MaskAwareCLIPVisionConfig(
        **VIT_B16, image_size=args.crop_size, input_image_size=args.image_size, mask_start_layer=args.mask_start_layer
    )
    ipclip = MaskAwareCLIPVisionModel._from_config(config, attn_implementation=attn)
    plain = CLIPVisionModel._from_config(
        CLIPVisionConfig(**VIT_B16, image_size=args.crop_size), attn_implementation=attn
    )
    plain.load_state_dict(ipclip.state_dict())
    dtype = DTYPES[args.dtype]
    return ipclip.to(args.device, dtype).eval(), plain.to(args.device, dtype).eval()


def workloads(args, ipclip, plain, batch):
    """name -> (callable, info) for one batch size; inputs are made once, outside the timed region."""
    dtype, dev = DTYPES[args.dtype], args.device
    image = torch.randn(batch, 3, args.image_size, args.image_size, device=dev, dtype=dtype)
    run_ipclip = torch.compile(ipclip) if args.compile else ipclip
    run_plain = torch.compile(plain) if args.compile else plain
    jobs = {"plain CLIP": (lambda: run_plain(image, interpolate_pos_encoding=True), {"kind": "plain", "N": 0})}
    for n in args.num_proposals:
        masks = torch.rand(batch, n, args.image_size, args.image_size, device=dev)
        jobs[f"IP-CLIP N={n}"] = (
            lambda masks=masks: run_ipclip(image, proposal_masks=masks, return_patch_tokens=False),
            {"kind": "ipclip", "N": n},
        )
    for n in args.num_proposals:
        crops = n * batch
        timed = min(crops, args.max_crops_per_run or crops)
        crop_batch = torch.randn(timed, 3, args.crop_size, args.crop_size, device=dev, dtype=dtype)
        jobs[f"crops N={n}"] = (
            lambda crop_batch=crop_batch: run_plain(crop_batch),
            {"kind": "crops", "N": n, "crops": crops, "timed_crops": timed, "scale": crops / timed},
        )
    return jobs


def synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_round_robin(jobs, repeats, device):
    """Best-of-`repeats` seconds per job; one warm-up each, then `repeats` rounds over all jobs."""
    with torch.inference_mode():
        for fn, _ in jobs.values():
            fn()
        samples = {name: [] for name in jobs}
        for _ in range(repeats):
            for name, (fn, info) in jobs.items():
                synchronize(device)
                start = time.perf_counter()
                fn()
                synchronize(device)
                samples[name].append((time.perf_counter() - start) * info.get("scale", 1.0))
    return {name: min(values) for name, values in samples.items()}


def count_flops(args, batch):
    """FLOPs per configuration, counted on CPU in fp32 with eager attention (batch-linear for the crops)."""
    probe = argparse.Namespace(**{**vars(args), "device": "cpu", "dtype": "fp32", "compile": False})
    ipclip, plain = build_models(probe, attn_implementation="eager")
    flops = {}

    def counted(fn):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    image = torch.randn(batch, 3, args.image_size, args.image_size)
    flops["plain CLIP"] = counted(lambda: plain(image, interpolate_pos_encoding=True))
    one_crop = counted(lambda: plain(torch.randn(1, 3, args.crop_size, args.crop_size)))
    for n in args.num_proposals:
        masks = torch.rand(batch, n, args.image_size, args.image_size)
        flops[f"IP-CLIP N={n}"] = counted(lambda: ipclip(image, proposal_masks=masks, return_patch_tokens=False))
        flops[f"crops N={n}"] = one_crop * n * batch
    return flops


# --------------------------------------------------------------------------------------------------------------
def memory_probe(spec: str) -> None:
    """Run in a subprocess: one forward of one configuration, print the peak memory growth in bytes.

    In `--quick` mode only plain CLIP and IP-CLIP / crops at N = 100 are measured.
    """
    spec = json.loads(spec)
    args = parse_args(spec["argv"])
    ipclip, plain = build_models(args)
    job = workloads(
        argparse.Namespace(**{**vars(args), "num_proposals": [spec["N"] or 1]}),
        ipclip,
        plain,
        spec["batch"],
    )
    name = {"plain": "plain CLIP", "ipclip": f"IP-CLIP N={spec['N']}", "crops": f"crops N={spec['N']}"}[spec["kind"]]
    print(peak_growth(job[name][0], args.device))


def peak_growth(fn, device) -> int:
    """Peak memory growth in bytes of one `fn()` in inference mode: the CUDA allocator's peak, or on CPU the process's
    peak RSS (the kernel's VmHWM mark, reset first so that the models built before do not count)."""
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.inference_mode():
            fn()
        return torch.cuda.max_memory_allocated() - base
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    with torch.inference_mode():
        fn()
    return (_status_kib("VmHWM") - before) * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_memory(args, argv, kind, n, batch):
    return run_memory_probe(__file__, {"argv": argv, "kind": kind, "N": n, "batch": batch})


def run_memory_probe(script: str, spec: dict) -> int | None:
    """The bytes that `script --_memory_probe <spec>` prints from a fresh process (None, stderr shown, if it fails)."""
    command = [sys.executable, os.path.abspath(script), "--_memory_probe", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
        return None
    return int(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------
def training_throughput(args, size: str, batch: int, num_proposals: int, steps: int):
    """Images per second of full MAFT fine-tuning steps: student with proposals and without, frozen teacher,
    mask-aware + self-distillation loss, backward, gradient clipping, AdamW (the work of `maft_hf.training`)."""
    from maft_hf import MAFTConfig, MaskAwareCLIPModel
    from maft_hf.training.freezing import apply_freeze_policy, parameter_groups
    from maft_hf.training.losses import mask_aware_loss, self_distillation_loss

    torch.manual_seed(0)
    shape = VIT_B16 if size == "base" else TINY
    image = args.image_size if size == "base" else 224
    vision = {**shape, "image_size": 224, "input_image_size": image}
    vision["mask_start_layer"] = args.mask_start_layer if size == "base" else 2
    text = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=99,
        bos_token_id=0,
        eos_token_id=1,
    )
    config = MAFTConfig(vision_config=vision, text_config=text, projection_dim=512 if size == "base" else 32)
    student = MaskAwareCLIPModel._from_config(config, attn_implementation=args.attn_implementation).to(args.device)
    teacher = MaskAwareCLIPModel._from_config(config, attn_implementation=args.attn_implementation).to(args.device)
    teacher.load_state_dict(student.state_dict())
    teacher.eval().requires_grad_(False)
    apply_freeze_policy(student, "released")
    optimizer = torch.optim.AdamW(parameter_groups(student), lr=1e-5)
    classes = 20
    text_embeds = torch.nn.functional.normalize(torch.randn(classes, config.projection_dim, device=args.device), dim=-1)
    pixel_values = torch.randn(batch, 3, image, image, device=args.device)
    proposals = torch.rand(batch, num_proposals, image, image, device=args.device)
    labels = torch.randint(0, classes, (batch, image, image), device=args.device)

    def logits(features):
        return 100.0 * torch.nn.functional.normalize(features, dim=-1) @ text_embeds.t()

    def step():
        masked = logits(student.get_mask_features(pixel_values, proposals).pooler_output)
        with torch.no_grad():
            teacher_logits = logits(teacher.get_image_features(pixel_values).pooler_output)
        student_logits = logits(student.get_image_features(pixel_values).pooler_output)
        loss = mask_aware_loss(masked, proposals, labels) + 0.1 * self_distillation_loss(student_logits, teacher_logits)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 0.01)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    synchronize(args.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(args.device)
    return batch * steps / (time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------------------
def fmt_bytes(value):
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._memory_probe:
        memory_probe(args._memory_probe)
        return None
    torch.set_grad_enabled(False)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    report = {
        "machine": f"{device_name}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "results": [],
        "ratios": {},
    }
    print(f"# {report['machine']} | {args.dtype} | {args.attn_implementation} | compile={args.compile}")
    ipclip, plain = build_models(args)
    probe_argv = [a for a in argv if a != "--quick"]
    for batch in args.batch_sizes:
        jobs = workloads(args, ipclip, plain, batch)
        times = time_round_robin(jobs, args.repeats, args.device)
        flops = count_flops(args, batch)
        rows = []
        for name, (_, info) in jobs.items():
            memory = None
            if not args.no_memory and not (args.quick and info["N"] not in (0, 100)):
                memory = peak_memory(args, probe_argv, info["kind"], info["N"], batch)
            rows.append(
                {
                    "batch": batch,
                    "name": name,
                    **info,
                    "seconds": times[name],
                    "flops": flops[name],
                    "peak_memory_bytes": memory,
                }
            )
        report["results"].extend(rows)
        base = times["plain CLIP"]
        print(f"\nbatch {batch}")
        print(f"{'configuration':<16} {'time (ms)':>12} {'vs plain':>9} {'GFLOPs':>10} {'peak memory':>12}")
        for row in rows:
            note = " (scaled)" if row.get("scale", 1.0) != 1.0 else ""
            print(
                f"{row['name']:<16} {row['seconds'] * 1e3:>12,.0f} {row['seconds'] / base:>9.3f} "
                f"{row['flops'] / 1e9:>10,.1f} {fmt_bytes(row['peak_memory_bytes']):>12}{note}"
            )
        ratios = {}
        for n in args.num_proposals:
            ip, crop = f"IP-CLIP N={n}", f"crops N={n}"
            ratios[f"N={n}"] = {
                "crops/IP-CLIP time": times[crop] / times[ip],
                "crops/IP-CLIP FLOPs": flops[crop] / flops[ip],
                "IP-CLIP/plain time": times[ip] / base,
            }
        if 100 in args.num_proposals and 300 in args.num_proposals:
            ratios["time N=300 / N=100"] = times["IP-CLIP N=300"] / times["IP-CLIP N=100"]
        report["ratios"][f"batch {batch}"] = ratios
        print("ratios:")
        for key, value in ratios.items():
            if isinstance(value, dict):
                print(f"  {key:<6} " + "  ".join(f"{k} {v:6.2f}" for k, v in value.items()))
            else:
                print(f"  {key} {value:.3f}")

    if not args.no_training:
        quick = args.quick
        runs = [
            ("tiny", 4, 10, 3 if quick else 10),
            ("base", 1 if quick else 2, 10 if quick else 100, 1 if quick else 3),
        ]
        if quick:  # one base step costs several seconds on CPU; the full run measures it
            runs = runs[:1]
        report["training"] = []
        print("\ntraining step (student + teacher forward, backward, AdamW)")
        for size, batch, n, steps in runs:
            with torch.enable_grad():
                ips = training_throughput(args, size, batch, n, steps)
            report["training"].append({"model": size, "batch": batch, "N": n, "images_per_second": ips})
            print(f"  {size:<5} batch {batch} N={n}: {ips:.2f} images/s")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.output_json}")
    return report


if __name__ == "__main__":
    main()
