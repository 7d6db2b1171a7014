#!/usr/bin/env python
"""`python scripts/export_onnx.py ARGS` is `maft-export-onnx ARGS`: the command lives in `maft_hf/cli/export_onnx.py`."""

from maft_hf.cli import run

if __name__ == "__main__":
    run("export_onnx")
