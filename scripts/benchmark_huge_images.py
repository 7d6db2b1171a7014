"""Peak memory of `segment()` on huge images: proposals at the image size (the old contract) vs at a working resolution.

Each case runs in its own subprocess. The peak RSS counts from just before `segment()` (the kernel's high-water mark
is reset through `/proc/self/clear_refs`), so the model, the image array and the imports are excluded; the
proposal generator runs inside `segment()` and is counted. Tiny model (`maft_hf.testing.tiny_maft_config`), 8 classes,
N proposals: "old" hands masks at the image size (what generators returned before `Proposals.image_size`), "new" hands
the same masks at 160x160 with `image_size` set, resized block by block inside `semantic_map`. A case whose masks
alone would not fit in the available memory is skipped.

    python scripts/benchmark_huge_images.py            # 1000, 4000, 10000 px squares, N = 100
    python scripts/benchmark_huge_images.py --quick    # 1000, 2000 px
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKING = 160  # side of the working-resolution masks (a Mask2Former / FreeSeg mask head at 640 px gives 160)


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(mode: str, side: int, num_proposals: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from maft_hf import MaskAwareCLIPModel
    from maft_hf.inference.pipeline import segment
    from maft_hf.model.processing_maft import MAFTImageProcessor
    from maft_hf.proposals import ProposalGenerator, Proposals
    from maft_hf.testing import tiny_maft_config

    torch.manual_seed(0)
    model = MaskAwareCLIPModel(tiny_maft_config(vision={"input_image_size": 32})).eval()
    processor = MAFTImageProcessor(size=32)
    names = [f"class {index}" for index in range(8)]
    text = torch.randn(len(names), model.config.projection_dim)
    image = np.zeros((side, side, 3), dtype=np.uint8)
    image[: side // 2] = (200, 30, 30)
    low = F.interpolate(torch.rand(num_proposals, 1, 6, 6) * 8 - 4, size=(WORKING, WORKING), mode="bilinear")
    low = low[:, 0].sigmoid()

    class Generator(ProposalGenerator):
        def __call__(self, images):
            (picture,) = images
            size = (picture.height, picture.width)
            if mode == "new":
                return [Proposals(masks=low, image_size=size)]
            return [Proposals(masks=F.interpolate(low[None], size=size, mode="bilinear", align_corners=False)[0])]

    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    start = time.perf_counter()
    (result,) = segment(image, names, model, processor, Generator(), text_classifier=text, batch_size=1)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    return {
        "mode": mode,
        "side": side,
        "num_proposals": num_proposals,
        "peak_above_start_mib": round((peak - before) / 2**20),
        "seconds": round(seconds, 2),
        "map_mib": round(result["segmentation"].numel() * 8 / 2**20),
    }


def available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1000 and 2000 px only")
    parser.add_argument("--num_proposals", type=int, default=100)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.num_proposals)))
        return 0
    sides = (1000, 2000) if args.quick else (1000, 4000, 10000)
    rows = []
    for side in sides:
        for mode in ("old", "new"):
            masks_bytes = args.num_proposals * side * side * 4
            if mode == "old" and masks_bytes * 1.5 > available_bytes():
                rows.append({"mode": mode, "side": side, "num_proposals": args.num_proposals, "skipped": True})
                continue
            command = [
                sys.executable,
                __file__,
                "--worker",
                mode,
                str(side),
                "--num_proposals",
                str(args.num_proposals),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| image | N | path | peak RSS above start (MiB) | of which the (H, W) int64 map | time (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        label = f"{row['side']}x{row['side']}"
        if row.get("skipped"):
            need = row["num_proposals"] * row["side"] ** 2 * 4 / 2**30
            print(f"| {label} | {row['num_proposals']} | {row['mode']} | skipped (masks alone {need:.0f} GiB) | | |")
        else:
            print(
                f"| {label} | {row['num_proposals']} | {row['mode']} | {row['peak_above_start_mib']} | "
                f"{row['map_mib']} | {row['seconds']} |"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
