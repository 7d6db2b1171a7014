"""[`MAFTHubMixin`], a base of `MaskAwareCLIPModel` that travels with the checkpoint: `save_pretrained` also writes
`pipeline_maft.py` and its imports, registered in `custom_pipelines` (so `trust_remote_code=True` needs no `maft_hf`);
`push_to_hub` uploads with the maft_hf model card."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PIPELINE_FILE = Path(__file__).with_name("pipeline_maft.py")
CUSTOM_PIPELINES = {
    "image-segmentation": {
        "impl": "pipeline_maft.OpenVocabularySegmentationPipeline",
        "pt": ["AutoModel"],
        "type": "multimodal",
    }
}


class MAFTHubMixin:
    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained` plus the pipeline code; `push_to_hub=True` then calls [`push_to_hub`]."""
        hub_options = {
            k: kwargs.pop(k) for k in ("repo_id", "token", "commit_message", "private", "create_pr") if k in kwargs
        }
        if PIPELINE_FILE.is_file():  # absent only in a copy of modeling_maft.py loaded without its pipeline file
            from transformers.dynamic_module_utils import get_relative_import_files

            self.config.custom_pipelines = {task: dict(info) for task, info in CUSTOM_PIPELINES.items()}
            os.makedirs(save_directory, exist_ok=True)
            for source in [PIPELINE_FILE, *map(Path, get_relative_import_files(PIPELINE_FILE))]:
                shutil.copyfile(source, Path(save_directory) / source.name)
        super().save_pretrained(save_directory, *args, **kwargs)
        if push_to_hub:
            repo_id = hub_options.pop("repo_id", Path(os.path.abspath(save_directory)).name)
            return self.push_to_hub(repo_id, **hub_options)
        return None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: list[str] | None = None,
    ):
        """Upload the checkpoint in one commit, with the maft_hf model card when the repository has no README.md."""
        from huggingface_hub import HfApi, ModelCard
        from transformers.utils.hub import create_and_tag_model_card

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        card = None
        if not api.file_exists(repo_id, "README.md", token=token):
            try:
                from maft_hf.hub.model_card import model_card_for
            except ImportError:  # the checkpoint's own copy of this file, without the package
                pass
            else:
                card = model_card_for(self, repo_id)
        card = card or create_and_tag_model_card(repo_id, tags, token=token)
        if tags:
            card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *tags]))
        with tempfile.TemporaryDirectory() as work:
            self.save_pretrained(work, max_shard_size=max_shard_size)
            ModelCard(str(card)).save(os.path.join(work, "README.md"))
            message = commit_message or "Upload MAFT model"
            options = dict(token=token, create_pr=create_pr, revision=revision, commit_description=commit_description)
            return self._upload_modified_files(work, repo_id, files_timestamps={}, commit_message=message, **options)
