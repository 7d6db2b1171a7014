"""Mask-aware fine-tuning (paper section 4.2) as plain functions that `maft_hf.cli.finetune` chains with Accelerate:
`data`, `losses` (Eq. 5-8), `objective`, `freezing`, `checkpoints` (atomic `step_<K>` saves) and `diagnostics`; every
name is imported lazily from its module."""

import importlib

_MODULES = {  # module: the names it exports
    ".data": """
        COLOR_JITTERS LABEL_MAPPINGS AugmentationConfig AugmentationParams ColorJitterParams LabelConverter
        StepBatchSampler apply_color_jitter sample_color_jitter TrainingExamples apply_augmentation check_columns
        check_example collate derived_seed example_generator generate_proposals image_to_tensor label_to_array
        load_training_proposal_generator prepare_batch proposals_from_column resolve_unseen_classes
        resolve_vocabulary sample_augmentation select_split validate_training_dataset
    """.split(),
    ".objective": """
        LOSS_NORMALIZATIONS MaskAwareStudent TrainingStepOutput image_class_logits make_teacher poly_lr_scheduler
        training_step
    """.split(),
    ".checkpoints": """
        CHECKPOINT_PREFIX LOSSES_FILE RESULTS_FILE RUN_FILE TRAINING_STATE_FILE changed_settings clear_run_folder
        complete_checkpoints find_latest_checkpoint load_training_state plan_run prune_checkpoints
        remove_stale_temporaries run_artifacts run_id run_settings save_checkpoint
    """.split(),
    ".diagnostics": "average_ranks rank_correlation_eval spearman_correlation".split(),
    ".losses": """
        class_masks_from_labels maft_loss mask_aware_entry_count mask_aware_loss mask_aware_loss_sum
        self_distillation_loss soft_iou
    """.split(),
    ".freezing": "FREEZE_POLICIES apply_freeze_policy is_trainable parameter_groups".split(),
    "..hub.loading": "load_model_and_processor".split(),
    "..hub.model_card": "write_model_card".split(),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
