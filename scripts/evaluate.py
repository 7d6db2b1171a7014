#!/usr/bin/env python
"""`python scripts/evaluate.py ARGS` is `maft-evaluate ARGS`: the command lives in `maft_hf/cli/evaluate.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("evaluate")
