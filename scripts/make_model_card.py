#!/usr/bin/env python
"""`python scripts/make_model_card.py ARGS` is `maft-make-model-card ARGS`: the command lives in `maft_hf/cli/make_model_card.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("make_model_card")
