#!/usr/bin/env python
"""`python scripts/segment.py ARGS` is `maft-segment ARGS`: the command lives in `maft_hf/cli/segment.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("segment")
