"""MAFTImageProcessor against a reference written from the released pre-processing, and its input rules."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maft_hf import MAFTImageProcessor
from maft_hf.data.transforms import to_clip_input

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def reference(array: np.ndarray, size: int) -> torch.Tensor:
    """Released recipe: (x / 255 - mean) / std, then bilinear align_corners=False to size x size, no crop."""
    x = torch.from_numpy(array.astype(np.float64)).permute(2, 0, 1) / 255.0
    x = (x - MEAN.double()) / STD.double()
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0].float()


def test_matches_reference_for_non_square_images():
    array = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = MAFTImageProcessor(size=48)(Image.fromarray(array))["pixel_values"]
    assert out.shape == (1, 3, 48, 48)
    torch.testing.assert_close(out[0], reference(array, 48), atol=1e-5, rtol=0)
    # the training path uses the same transform on the 0..255 scale
    train = to_clip_input(torch.from_numpy(array).permute(2, 0, 1), size=48)
    torch.testing.assert_close(out[0], train, atol=1e-5, rtol=0)


def test_batches_and_save_load_round_trip(tmp_path):
    arrays = [np.random.default_rng(i).integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) for i in range(3)]
    processor = MAFTImageProcessor(size=32)
    batch = processor([Image.fromarray(a) for a in arrays])["pixel_values"]
    assert batch.shape == (3, 3, 32, 32)
    processor.save_pretrained(tmp_path)
    loaded = MAFTImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == 32 and loaded.image_mean == processor.image_mean
    torch.testing.assert_close(loaded([Image.fromarray(a) for a in arrays])["pixel_values"], batch)
