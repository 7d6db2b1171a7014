#!/usr/bin/env python
"""`python scripts/convert_official_checkpoint.py ARGS` is `maft-convert-official-checkpoint ARGS`: the command lives in `maft_hf/cli/convert_official_checkpoint.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("convert_official_checkpoint")
