"""Export paths of the IP-CLIP encoder: torch.export with a dynamic number of proposals, torch.compile without
recompiling across N, and ONNX (dynamo exporter) run in onnxruntime."""

import pytest
import torch
from torch.export import Dim

from maft_hf import MaskAwareCLIPModel
from maft_hf.testing import tiny_maft_config


class MaskFeatures(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, proposal_masks):
        return self.model.get_mask_features(pixel_values, proposal_masks).pooler_output


def tiny_model(attn):
    return MaskAwareCLIPModel._from_config(tiny_maft_config(), attn_implementation=attn).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_torch_export_with_dynamic_number_of_proposals_equals_eager(attn):
    module = MaskFeatures(tiny_model(attn)).eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(
        module,
        (x, torch.rand(2, 5, 24, 24)),
        dynamic_shapes={"pixel_values": None, "proposal_masks": {1: Dim("N", min=1, max=512)}},
    )
    # nothing in the graph reads a tensor value back to the host
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("_local_scalar_dense" in t or "item" in t for t in targets), targets
    for n in (1, 4, 23):
        masks = torch.rand(2, n, 24, 24)
        masks[0, 0] = 0.0  # an empty proposal
        with torch.no_grad():
            expected = module(x, masks)
            exported = program.module()(x, masks)
        assert exported.shape == (2, n, 16)
        torch.testing.assert_close(exported, expected, atol=1e-5, rtol=0)


def compile_without_recompiles(backend):
    model = tiny_model("sdpa")
    x = torch.randn(1, 3, 32, 32)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(lambda p, m: model.get_mask_features(p, m).pooler_output, fullgraph=True, backend=backend)
    first = torch.rand(1, 3, 32, 32)
    torch._dynamo.mark_dynamic(first, 1)  # N is dynamic; N = 1 is a size torch.compile always specialises
    with torch.no_grad():
        compiled(x, first)
        with torch.compiler.set_stance("fail_on_recompile"):  # a recompile raises
            for n in (2, 6, 17, 64):
                masks = torch.rand(1, n, 32, 32)
                torch.testing.assert_close(
                    compiled(x, masks), model.get_mask_features(x, masks).pooler_output, atol=1e-5, rtol=0
                )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_torch_compile_fullgraph_does_not_recompile_across_n():
    compile_without_recompiles("aot_eager")


@pytest.mark.slow
def test_torch_compile_inductor_does_not_recompile_across_n():
    compile_without_recompiles("inductor")


def test_torch_compile_fullgraph_without_masks_is_clip():
    model = tiny_model("sdpa")
    x = torch.randn(2, 3, 32, 32)
    torch._dynamo.reset()
    compiled = torch.compile(lambda p: model.get_image_features(p).pooler_output, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model.get_image_features(x).pooler_output, atol=1e-6, rtol=0)


def test_onnx_export_runs_in_onnxruntime_and_matches_pytorch(tiny_checkpoint, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from maft_hf.cli.export_onnx import main

    path = main(["--checkpoint", str(tiny_checkpoint), "--output", str(tmp_path / "m.onnx"), "--mask_size", "20"])
    model = MaskAwareCLIPModel.from_pretrained(tiny_checkpoint).eval()
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values", "proposal_masks"]
    for batch, n in ((1, 1), (3, 2), (2, 40)):
        x, masks = torch.randn(batch, 3, 32, 32), torch.rand(batch, n, 20, 20)
        (ours,) = session.run(None, {"pixel_values": x.numpy(), "proposal_masks": masks.numpy()})
        with torch.no_grad():
            expected = torch.nn.functional.normalize(model.get_mask_features(x, masks).pooler_output, dim=-1)
        assert ours.shape == (batch, n, 16)
        torch.testing.assert_close(torch.from_numpy(ours), expected, atol=1e-4, rtol=0)
