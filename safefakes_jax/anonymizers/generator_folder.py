"""The generator folders the GAN anonymizers load: reading one, and its content hash.

A folder is what `tools/convert_torch_weights.py` writes from an original checkpoint or what a
trainer exports as `<workdir>/generator` (`torch_import.save_converted`): `checkpoint/` (orbax)
and `conversion.json`, whose `format` names the model. `read` checks both and returns the
info, the restored tree and `folder_sha256`, the hash that goes into a copy's provenance (the
folder's bytes make the output, not its path).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from safefakes_jax.models import torch_import


class GeneratorNotFoundError(FileNotFoundError):
    """No generator checkpoint where the config points (the message says how to make one)."""


def folder_sha256(path: str) -> str:
    """sha256 over the relative names and bytes of every file under `path` (sorted)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode() + b'\0')
            digest.update(torch_import.file_sha256(full).encode())
    return digest.hexdigest()


def read(path: str, formats: Sequence[str], model: str, hint: str) -> tuple[dict, Any, str]:
    """(conversion info, restored tree, folder sha256) of a generator folder.

    Args:
      path: the folder (absolute).
      formats: the `conversion.json` formats this model accepts.
      model: its name for messages ('DeepPrivacy').
      hint: how to make such a folder (appended to a not-found message).

    Raises:
      GeneratorNotFoundError: no such folder, or no `conversion.json` / checkpoint in it.
      ValueError: a checkpoint of another model.
    """
    if not path or not os.path.isdir(path):
        raise GeneratorNotFoundError(
            f'{model} generator not found: {path or "(anonymizer.params is empty)"}; {hint}'
        )
    try:
        info = torch_import.load_conversion_info(path)
        if info.get('format') not in formats:
            raise ValueError(
                f'{path}: a {info.get("format")!r} checkpoint, not a {model} generator'
            )
        tree = torch_import.load_converted(path)
    except FileNotFoundError as e:
        raise GeneratorNotFoundError(f'{e}; {hint}') from None
    return info, tree, folder_sha256(path)
