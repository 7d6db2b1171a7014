"""The command-line programs (`maft-<command>`, `python -m maft_hf.cli <command>`, `scripts/<command>.py`): each is a
module of this package with a `main(argv)`."""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "segment": "segment images with any vocabulary: maps, overlays, per-class areas",
    "finetune": "mask-aware fine-tuning with accelerate (run it with `accelerate launch`)",
    "evaluate": "evaluate on a benchmark or any labelled dataset: mIoU / hIoU, paper tables",
    "prepare_benchmark": "convert an official benchmark release into a datasets folder",
    "prepare_coco_stuff": "convert COCO-Stuff 164k into a training datasets folder",
    "convert_clip_checkpoint": "a CLIP checkpoint -> a MAFT starting checkpoint with processor files",
    "convert_official_checkpoint": "the authors' released .pth -> a MAFT checkpoint",
    "make_model_card": "write a Hub model card (README.md) for a checkpoint",
    "reproduce_paper": "the released checkpoints -> the paper's tables, in one command",
    "export_onnx": "export the mask-aware image encoder to ONNX (dynamic number of proposals) and check it",
}


def run(command: str, argv: list[str] | None = None):
    """Run `command` (a key of `COMMANDS`) on `argv` (default: `sys.argv[1:]`); a `ValueError` (bad input, explained in
    its message) becomes a one-line error and exit status 1."""
    if command not in COMMANDS:
        raise SystemExit(f"maft: unknown command {command!r}; expected one of {', '.join(COMMANDS)}.")
    module = importlib.import_module(f"{__name__}.{command}")
    try:
        return module.main(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {err}")  # the program as invoked: maft-x or x.py


def entry_point():
    """The `maft-<command>` console scripts: the command is read from the program name."""
    run(os.path.basename(sys.argv[0]).removesuffix(".exe").removeprefix("maft-").replace("-", "_"))


def main(argv: list[str] | None = None):
    """`python -m maft_hf.cli <command> [args]`; `--help` lists the commands."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print("usage: python -m maft_hf.cli <command> [args]   (or: maft-<command> [args])\n\ncommands:")
        print("\n".join(f"  {name.replace('_', '-'):<{width}}  {text}" for name, text in COMMANDS.items()))
        return None
    return run(argv[0].replace("-", "_"), argv[1:])
