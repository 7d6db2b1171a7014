#!/usr/bin/env python
"""`python scripts/prepare_coco_stuff.py ARGS` is `maft-prepare-coco-stuff ARGS`: the command lives in `maft_hf/cli/prepare_coco_stuff.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("prepare_coco_stuff")
