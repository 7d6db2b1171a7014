"""Habits of the package kept by a test: short functions, and nothing that points outside the repository."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "maft_hf"


def test_no_function_is_longer_than_120_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 120:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, "split these functions: " + ", ".join(long)


def test_nothing_refers_outside_the_repository():
    folders = ["src", "scripts", "examples", "docs", "model_cards", "space"]
    files = [ROOT / "README.md"] + [p for f in folders for p in (ROOT / f).rglob("*") if p.suffix in (".py", ".md")]
    outside = [str(p.relative_to(ROOT)) for p in files if re.search(r"\.\./shared|\bshared/", p.read_text())]
    assert not outside
