"""Turn a CLIP checkpoint (Hub id or local directory) into a MAFT checkpoint directory: CLIP's parameters, a MAFT
config (mask-aware vision config with the preset's input size and start layer) and a `MAFTProcessor` (our image
processor at the model's input size plus the source's tokenizer)."""

from __future__ import annotations

import json
import logging
import os

from ..model.configuration_maft import MAFTConfig

logger = logging.getLogger(__name__)

# ViT-B/16: paper section 5.1 and Tab. 4e. ViT-L/14: as the release runs (its START_LAYERS lands in another argument,
# so masking starts at layer 8; the /14 patches read the top-left 476 px of 480). Others: 480 px, 2/3 of the depth.
PRESETS = {
    "vit-b16": {"patch_size": 16, "num_hidden_layers": 12, "input_image_size": 480, "mask_start_layer": 8},
    "vit-b32": {"patch_size": 32, "num_hidden_layers": 12, "input_image_size": 480, "mask_start_layer": 8},
    "vit-l14": {"patch_size": 14, "num_hidden_layers": 24, "input_image_size": 480, "mask_start_layer": 8},
}


def preset_name(vision_config) -> str | None:
    """The `PRESETS` key matching a CLIP vision config's patch size and depth, else None."""
    shape = (vision_config.patch_size, vision_config.num_hidden_layers)
    return next((name for name, p in PRESETS.items() if shape == (p["patch_size"], p["num_hidden_layers"])), None)


def preset_for(vision_config) -> dict:
    """`input_image_size` and `mask_start_layer` for a CLIP vision config: its `PRESETS` entry, else 480 px and 2/3
    of the depth."""
    preset = PRESETS.get(preset_name(vision_config)) or {
        "input_image_size": max(vision_config.patch_size, 480),
        "mask_start_layer": 2 * vision_config.num_hidden_layers // 3,
    }
    return {key: preset[key] for key in ("input_image_size", "mask_start_layer")}


def pretrained_options(local_files_only: bool | None) -> dict:
    """`from_pretrained` keyword arguments for `local_files_only` (None: transformers' default)."""
    return {} if local_files_only is None else {"local_files_only": local_files_only}


def _clip_mean_std(name_or_path: str, options: dict) -> tuple[list | None, list | None]:
    from transformers.utils import cached_file

    try:
        with open(cached_file(name_or_path, "preprocessor_config.json", **options)) as f:
            config = json.load(f)
        return config.get("image_mean"), config.get("image_std")
    except Exception as err:  # noqa: BLE001 - no preprocessor config means CLIP's defaults
        logger.info("No preprocessor_config.json in %s (%s); using CLIP's mean/std.", name_or_path, err)
        return None, None


def load_clip_as_maft(
    clip_name_or_path: str,
    mask_start_layer: int | None = None,
    input_image_size: int | None = None,
    local_files_only: bool | None = None,
):
    """A plain CLIP checkpoint as `(MaskAwareCLIPModel, MAFTProcessor)` in memory, with the same weights (else
    `ValueError`) and the settings of [`preset_for`] unless overridden."""
    from transformers import AutoTokenizer, PretrainedConfig

    from ..model.modeling_maft import MaskAwareCLIPModel
    from ..model.processing_maft import MAFTImageProcessor, MAFTProcessor

    options = pretrained_options(local_files_only)
    source, _ = PretrainedConfig.get_config_dict(clip_name_or_path, **options)
    if source.get("model_type") != "clip" or "vision_config" not in source or "text_config" not in source:
        raise ValueError(
            f"{clip_name_or_path!r} is not a CLIP checkpoint: expected model_type 'clip' with vision and text "
            f"configs, got model_type {source.get('model_type')!r}."
        )
    source = {k: v for k, v in source.items() if k not in ("model_type", "architectures", "transformers_version")}
    vision = {k: v for k, v in source["vision_config"].items() if k != "model_type"}
    settings = preset_for(MAFTConfig(vision_config={**vision, "mask_start_layer": 0}).vision_config)
    overrides = {"mask_start_layer": mask_start_layer, "input_image_size": input_image_size}
    settings.update({key: value for key, value in overrides.items() if value is not None})
    config = MAFTConfig(**{**source, "vision_config": {**vision, **settings}})
    model, info = MaskAwareCLIPModel.from_pretrained(
        clip_name_or_path, config=config, output_loading_info=True, **options
    )
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems:
        raise ValueError(f"{clip_name_or_path!r} does not match the CLIP architecture of its config: {problems}")
    image_mean, image_std = _clip_mean_std(clip_name_or_path, options)
    image_processor = MAFTImageProcessor(
        config.vision_config.input_image_size, image_mean=image_mean, image_std=image_std
    )
    return model, MAFTProcessor(image_processor, AutoTokenizer.from_pretrained(clip_name_or_path, **options))


def convert_clip_checkpoint(
    clip_name_or_path: str,
    output_dir: str | os.PathLike,
    mask_start_layer: int | None = None,
    input_image_size: int | None = None,
    local_files_only: bool = False,
    push_to_hub: bool = False,
    hub_model_id: str | None = None,
    token: str | None = None,
):
    """Write a CLIP checkpoint (Hub id or `CLIPModel` directory) as a MAFT checkpoint directory; returns the model."""
    model, processor = load_clip_as_maft(clip_name_or_path, mask_start_layer, input_image_size, local_files_only)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if push_to_hub:
        upload_checkpoint(output_dir, hub_model_id, token, f"Convert {clip_name_or_path} to MAFT")
    return model


def upload_checkpoint(folder: str | os.PathLike, repo_id: str | None, token: str | None, message: str) -> str:
    """Upload a checkpoint folder to the Hub (default repo name: the folder's); returns the repo id."""
    from huggingface_hub import HfApi

    repo_id = repo_id or os.path.basename(os.path.abspath(folder))
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=os.fspath(folder), repo_id=repo_id, commit_message=message)
    return repo_id
