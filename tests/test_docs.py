"""Every Python snippet in README.md, docs/ and model_cards/ runs against tiny local models, so docs cannot rot.

Hub ids of MAFT checkpoints (`"<org>/maft-vit..."`) become a tiny local checkpoint, `mask2former:<hub id>` a tiny
local Mask2Former, `sam:<hub id>` a tiny local SAM; images the snippets open are bundled or written here.
"""

import pathlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from maft_hf.testing import build_tiny_checkpoint, build_tiny_mask2former

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m 'not slow'

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "model_cards").glob("*.md"))]
SNIPPETS = [
    pytest.param(path, index, code, id=f"{path.relative_to(ROOT)}#{index}")
    for path in DOCS
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))
]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("doc-models")
    return {
        "maft": build_tiny_checkpoint(root / "maft"),
        "mask2former": build_tiny_mask2former(root / "mask2former"),
    }


def localise(code: str, models: dict) -> str:
    code = re.sub(r'"mask2former:[^"]+"', repr("mask2former:" + models["mask2former"]), code)
    code = re.sub(r'"[\w.-]+/maft-vit[\w-]*"', repr(models["maft"]), code)
    return code


def test_docs_have_snippets():
    names = {param.values[0].name for param in SNIPPETS}
    assert "README.md" in names and "maft-vitb16.md" in names


@pytest.mark.parametrize("path,index,code", SNIPPETS)
def test_snippet_runs(path, index, code, tiny_models, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    rng = np.random.default_rng(index)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "street.jpg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"snippet_{index}"}
    exec(compile(localise(code, tiny_models), f"{path.name}#{index}", "exec"), namespace)
    for written in re.findall(r'"([\w./-]+\.png)"', code):
        if not written.startswith("examples/"):
            assert (tmp_path / written).is_file(), f"the snippet should have written {written}"
