#!/usr/bin/env python
"""`python scripts/finetune.py ARGS` is `maft-finetune ARGS`: the command lives in `maft_hf/cli/finetune.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("finetune")
