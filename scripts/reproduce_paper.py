#!/usr/bin/env python
"""`python scripts/reproduce_paper.py ARGS` is `maft-reproduce-paper ARGS`: the command lives in `maft_hf/cli/reproduce_paper.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("reproduce_paper")
