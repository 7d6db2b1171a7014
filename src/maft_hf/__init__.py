"""maft_hf: MAFT (mask-aware fine-tuning of CLIP, NeurIPS 2023) as HuggingFace transformers models.

`import maft_hf` registers the configs and models with `AutoConfig` / `AutoModel`, so that
`AutoModel.from_pretrained(<MAFT checkpoint>)` returns a `MaskAwareCLIPModel`.
"""

from transformers import AutoConfig, AutoModel

from .evaluation.loop import evaluate_segmentation
from .evaluation.metrics import ConfusionMatrix, compute_segmentation_metrics, load_metric
from .inference.outputs import class_areas, save_segmentation
from .inference.pipeline import OpenVocabularySegmentationPipeline, register_pipeline, segment
from .inference.semantic_map import classify_proposals, ensemble_class_scores, semantic_map, semantic_scores
from .inference.text_classifier import TextClassifierCache, build_text_classifier
from .inference.visualization import overlay, save_overlay
from .inference.vocabulary import available_vocabularies, load_prompt_templates, load_vocabulary
from .model.configuration_maft import MAFTConfig, MaskAwareCLIPVisionConfig
from .model.images import load_image
from .model.modeling_maft import (
    MAFTOutput,
    MaskAwareCLIPModel,
    MaskAwareCLIPVisionModel,
    MaskAwareCLIPVisionModelWithProjection,
    MaskAwareCLIPVisionOutput,
    pad_proposals,
    proposals_to_patch_visibility,
    resize_position_embeddings,
)
from .model.processing_maft import MAFTImageProcessor, MAFTProcessor, register_processors
from .proposals import ProposalGenerator, Proposals, load_proposal_generator
from .training.freezing import FREEZE_POLICIES, apply_freeze_policy, parameter_groups
from .training.losses import maft_loss, mask_aware_loss, self_distillation_loss, soft_iou

__version__ = "0.1.0"

AutoConfig.register(MAFTConfig.model_type, MAFTConfig, exist_ok=True)
AutoConfig.register(MaskAwareCLIPVisionConfig.model_type, MaskAwareCLIPVisionConfig, exist_ok=True)
AutoModel.register(MAFTConfig, MaskAwareCLIPModel, exist_ok=True)
AutoModel.register(MaskAwareCLIPVisionConfig, MaskAwareCLIPVisionModel, exist_ok=True)
# Saved checkpoints carry `auto_map`, so `trust_remote_code=True` loads them without this package.
MAFTConfig.register_for_auto_class()
MaskAwareCLIPVisionConfig.register_for_auto_class()
MaskAwareCLIPModel.register_for_auto_class("AutoModel")
MaskAwareCLIPVisionModel.register_for_auto_class("AutoModel")
register_processors()
register_pipeline()

__all__ = [
    "class_areas",
    "save_segmentation",
    "ConfusionMatrix",
    "compute_segmentation_metrics",
    "load_metric",
    "evaluate_segmentation",
    "FREEZE_POLICIES",
    "OpenVocabularySegmentationPipeline",
    "ProposalGenerator",
    "Proposals",
    "TextClassifierCache",
    "apply_freeze_policy",
    "available_vocabularies",
    "build_text_classifier",
    "classify_proposals",
    "ensemble_class_scores",
    "load_prompt_templates",
    "load_proposal_generator",
    "load_vocabulary",
    "maft_loss",
    "mask_aware_loss",
    "overlay",
    "parameter_groups",
    "register_pipeline",
    "save_overlay",
    "segment",
    "self_distillation_loss",
    "semantic_map",
    "semantic_scores",
    "soft_iou",
    "MAFTConfig",
    "MaskAwareCLIPVisionConfig",
    "MaskAwareCLIPModel",
    "MaskAwareCLIPVisionModel",
    "MaskAwareCLIPVisionModelWithProjection",
    "MaskAwareCLIPVisionOutput",
    "MAFTOutput",
    "MAFTImageProcessor",
    "MAFTProcessor",
    "load_image",
    "pad_proposals",
    "proposals_to_patch_visibility",
    "resize_position_embeddings",
]
