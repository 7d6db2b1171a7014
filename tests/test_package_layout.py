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


def test_every_command_is_listed_installed_and_wrapped(capsys):
    """`python -m maft_hf.cli --help` lists every command; each has a `maft-<command>` entry point, a module with a
    `main`, and a `scripts/<command>.py` wrapper."""
    import importlib

    from maft_hf.cli import COMMANDS, main

    main(["--help"])
    listed = capsys.readouterr().out
    entry_points = re.findall(
        r'^maft-([a-z-]+) = "maft_hf.cli:entry_point"$', (ROOT / "pyproject.toml").read_text(), re.M
    )
    assert sorted(entry_points) == sorted(command.replace("_", "-") for command in COMMANDS)
    for command in COMMANDS:
        assert f"  {command.replace('_', '-')} " in listed
        assert callable(importlib.import_module(f"maft_hf.cli.{command}").main)
        assert f'run("{command}")' in (ROOT / "scripts" / f"{command}.py").read_text()


def test_the_readme_folder_map_names_every_subpackage():
    readme = (ROOT / "README.md").read_text()
    folder_map = readme[readme.index("## Where things live") :].split("```")[1]
    subpackages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert [name for name in subpackages if f"  {name}/" not in folder_map] == []
