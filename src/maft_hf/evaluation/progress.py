"""Resumable evaluation: each process atomically saves its partial confusion matrix, its count of examples and a JSON
key of the run to `<folder>/process-<rank>-of-<world>.npz` (no pickles)."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def check_writable(folder: str | os.PathLike, what: str = "--output_dir") -> Path:
    """Create `folder` if needed and write a probe file in it; a `ValueError` says why it is not writable."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r} is not a writable folder ({err}); choose another one.") from err
    return path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ProgressFile:
    """One process's saved progress; loading refuses another run (naming what differs) or number of processes."""

    def __init__(self, folder: str | os.PathLike, rank: int, world: int, key: Mapping[str, Any], save_every: int):
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}.")
        self.folder = check_writable(folder, "The progress folder")
        self.path = self.folder / f"process-{rank}-of-{world}.npz"
        self.world, self.save_every, self.last_saved = world, save_every, 0
        self.key = json.loads(json.dumps(dict(key)))  # as it reads back

    def load(self) -> dict | None:
        """`{"matrix", "count", "extra"}` saved by this process for this run, or None when nothing was saved."""
        if not self.path.is_file():
            suffix = f"-of-{self.world}.npz"
            others = sorted(p.name for p in self.folder.glob("process-*-of-*.npz") if not p.name.endswith(suffix))
            if others:
                raise ValueError(
                    f"Cannot resume with {self.world} process(es): {self.folder} holds the progress of another "
                    f"number of processes ({others}); resume with that number, or start again without --resume."
                )
            return None
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                matrix, meta = saved["matrix"], json.loads(saved["meta"].tobytes())
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"Cannot read the saved progress {self.path}: {err}") from err
        differ = sorted(k for k in meta["key"].keys() | self.key.keys() if meta["key"].get(k) != self.key.get(k))
        if differ:
            details = "; ".join(f"{k}: saved {meta['key'].get(k)!r}, now {self.key.get(k)!r}" for k in differ)
            raise ValueError(
                f"The saved progress {self.path} belongs to another run ({details}); start again without --resume "
                "or use another --output_dir."
            )
        self.last_saved = meta["count"]
        return {"matrix": matrix, "count": meta["count"], "extra": meta.get("extra", {})}

    def save(self, matrix, count: int, extra: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Save when `count` crossed a multiple of `save_every` since the last save (always with `force`)."""
        if not force and count // self.save_every == self.last_saved // self.save_every:
            return False
        meta = json.dumps({"key": self.key, "count": int(count), "extra": dict(extra or {})}).encode("utf-8")
        array = matrix.detach().cpu().numpy() if hasattr(matrix, "detach") else np.asarray(matrix)
        buffer = io.BytesIO()
        np.savez(buffer, matrix=array.astype(np.int64), meta=np.frombuffer(meta, dtype=np.uint8))
        write_atomic(self.path, buffer.getvalue())
        self.last_saved = int(count)
        logger.debug("saved the progress of %d example(s) to %s", count, self.path)
        return True
