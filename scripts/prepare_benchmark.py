#!/usr/bin/env python
"""`python scripts/prepare_benchmark.py ARGS` is `maft-prepare-benchmark ARGS`: the command lives in `maft_hf/cli/prepare_benchmark.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("prepare_benchmark")
