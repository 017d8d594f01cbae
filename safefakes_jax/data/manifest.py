"""The anonymization manifest and the rest of an anonymized copy's metadata.

An anonymized copy `dst` of a WIDER-layout folder holds, besides the images:

* `anonymization_config.json`: what produced it (anonymizer name and parameters, seed, output
  format) and its `config_hash`, the sha256 of the canonical JSON (sorted keys, no spaces) of
  exactly those settings. Settings that do not change the output bytes (worker count, paths,
  splits) are not in it.
* `anonymization_manifest.jsonl`: one JSON object per image, splits in WIDER order (train,
  val), images in annotation order: `split`, `image` (source name as in the txt), `output`
  (name under `WIDER_<split>/images`, null if failed), `status` (`ok` or `failed:<reason>`),
  `source_sha256`, `output_sha256`, `faces` (one record per annotated box, see
  `anonymizers.base`), `method`, `config_hash`.
* `.anonymization_manifest.partial.jsonl` while a run is in progress: the same objects,
  appended as images finish (in completion order); a resumed run trusts an entry only when its
  config hash matches and the source and output files still have the recorded sha256.

The benchmark's I/O floor (decode + re-encode, no anonymization) writes `io_floor_*` files
instead and no annotation files, so its output is never a usable, let alone "anonymized",
WIDER folder.

`check_dst` refuses a `dst` that is a file, a dangling symlink or on a read-only or
unwritable place, before anything is written. `prepare_dst` refuses a `dst` that holds another
run's output (other settings, the other kind of run, or a WIDER folder this engine did not
write) unless `overwrite`, which first removes the images listed in that run's manifests, its
annotation and sidecar files, manifests and config (other files are left alone). Manifests are
input like any other: every name they list must be a safe relative name that resolves inside
`dst`, or nothing is removed and the run stops naming the manifest and line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from safefakes_jax.data import atomic_io, landmarks_sidecar, root_paths, wider

ENGINE_VERSION = 1  # Bump when the engine's output bytes change for the same settings.
CONFIG_FILE = 'anonymization_config.json'
MANIFEST = 'anonymization_manifest.jsonl'
PARTIAL = '.anonymization_manifest.partial.jsonl'
FLOOR_CONFIG = 'io_floor_NOT_ANONYMIZED.json'
FLOOR_MANIFEST = 'io_floor_manifest.jsonl'
FLOOR_PARTIAL = '.io_floor_manifest.partial.jsonl'
SPLIT_ORDER = ('train', 'val')


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the text the config hash is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(',', ':'), ensure_ascii=True)


def config_hash(settings: Mapping[str, Any]) -> str:
    """sha256 hex digest of `canonical_json(settings)`."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()


def sha256_file(path: str) -> str | None:
    """sha256 hex digest of a file's bytes; None if it does not exist."""
    try:
        with open(path, 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def entry_line(entry: Mapping[str, Any]) -> str:
    """One manifest line (keys in the order given, compact, newline-terminated)."""
    return json.dumps(entry, separators=(',', ':')) + '\n'


def numbered_entries(path: str) -> list[tuple[int, dict]]:
    """(line number, entry) of a manifest or partial manifest; a torn last line (a crash
    mid-write) and other unparsable lines are ignored, since every entry is re-verified before
    use. A missing file has none."""
    entries = []
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for lineno, line in enumerate(f, start=1):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and {'split', 'image', 'status'} <= set(entry):
                    entries.append((lineno, entry))
    except FileNotFoundError:
        pass
    return entries


def read_entries(path: str) -> list[dict]:
    """The entries of `numbered_entries(path)`."""
    return [entry for _, entry in numbered_entries(path)]


def previous_entries(dst: str, floor: bool = False) -> dict[tuple[str, str], dict]:
    """(split, image) -> latest entry from the complete and the partial manifest of `dst`."""
    names = (FLOOR_MANIFEST, FLOOR_PARTIAL) if floor else (MANIFEST, PARTIAL)
    out: dict[tuple[str, str], dict] = {}
    for name in names:  # The partial manifest is newer than the complete one.
        for entry in read_entries(os.path.join(dst, name)):
            out[(entry['split'], entry['image'])] = entry
    return out


def write_manifest(path: str, entries: Iterable[Mapping[str, Any]]) -> None:
    """Writes a complete manifest atomically."""
    atomic_io.write_text(path, ''.join(entry_line(e) for e in entries))


def read_config(dst: str, floor: bool = False) -> dict | None:
    """The `anonymization_config.json` (or the floor's) of `dst`, None if there is none.

    Raises:
      ValueError: the file exists but is not a JSON object with a `config_hash`.
    """
    path = os.path.join(dst, FLOOR_CONFIG if floor else CONFIG_FILE)
    try:
        with open(path, encoding='utf-8') as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e}); remove it or set overwrite=True') from None
    if not isinstance(config, dict) or 'config_hash' not in config:
        raise ValueError(f'{path}: no config_hash; remove it or set overwrite=True')
    return config


def write_config(dst: str, settings: Mapping[str, Any], floor: bool = False) -> str:
    """Writes the settings and their hash into `dst`; returns the hash."""
    digest = config_hash(settings)
    body = {'config_hash': digest, 'settings': dict(settings)}
    if floor:
        body['warning'] = (
            'I/O-floor benchmark output: images decoded and re-encoded, faces NOT '
            'anonymized. Not a dataset; delete after benchmarking.'
        )
    atomic_io.write_text(
        os.path.join(dst, FLOOR_CONFIG if floor else CONFIG_FILE),
        json.dumps(body, indent=2, sort_keys=True) + '\n',
    )
    return digest


def entry_is_done(
    entry: Mapping[str, Any] | None,
    digest: str,
    source_path: str,
    output_path: str,
    output_name: str,
) -> bool:
    """True if `entry` proves the image is finished: same config hash, status ok, the expected
    output name, and source and output files with the recorded sha256 (both re-read)."""
    if (
        entry is None
        or entry.get('status') != 'ok'
        or entry.get('config_hash') != digest
        or entry.get('output') != output_name
    ):
        return False
    return sha256_file(output_path) == entry.get('output_sha256') and sha256_file(
        source_path
    ) == entry.get('source_sha256')


def _looks_like_wider(dst: str) -> bool:
    return any(
        os.path.exists(os.path.join(dst, p))
        for p in ('wider_face_split', 'WIDER_train', 'WIDER_val')
    )


def metadata_files() -> list[str]:
    """The names, relative to `dst`, of every non-image file the engine writes."""
    files = [CONFIG_FILE, MANIFEST, PARTIAL, FLOOR_CONFIG, FLOOR_MANIFEST, FLOOR_PARTIAL]
    for split in wider.SPLITS:
        files += [
            f'wider_face_split/wider_face_{split}_bbx_gt.txt',
            landmarks_sidecar.relative_path(split),
        ]
    return files


def check_dst(dst: str) -> None:
    """Fails before anything is written when `dst` cannot be (safely) an output folder.

    Raises:
      ValueError: `dst` is a file or a dangling symlink, or the folder it is (or would be
        created in) is not writable (read-only file system, permissions).
      root_paths.PathEscapeError: one of the engine's own files or folders in `dst` is a
        symlink that leads out of it.
    """
    if os.path.lexists(dst) and not os.path.isdir(dst):
        what = (
            'a dangling symlink'
            if os.path.islink(dst) and not os.path.exists(dst)
            else 'not a folder'
        )
        raise ValueError(f'dst {dst} is {what}; give a folder (new or written by this engine)')
    existing = dst
    while not os.path.exists(existing):
        parent = os.path.dirname(os.path.abspath(existing))
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise ValueError(f'dst {dst}: {existing} is not a folder; cannot create dst there')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f'dst {dst}: {existing} is not writable (read-only file system or no permission)'
        )
    for name in metadata_files():
        root_paths.resolve_inside(dst, name, f'dst {dst}')


def _outputs_to_remove(dst: str) -> list[str]:
    """The image files an earlier run's manifests list, each checked to lie inside `dst`."""
    paths = []
    for floor in (False, True):
        for name in (FLOOR_MANIFEST, FLOOR_PARTIAL) if floor else (MANIFEST, PARTIAL):
            path = os.path.join(dst, name)
            for lineno, entry in numbered_entries(path):
                output, split = entry.get('output'), entry.get('split')
                if not output or split not in wider.SPLITS:
                    continue
                if not isinstance(output, str):
                    raise ValueError(f'{path}:{lineno}: output {output!r} is not a name')
                paths.append(
                    root_paths.resolve_inside(
                        dst, f'WIDER_{split}/images/{output}', f'{path}:{lineno}'
                    )
                )
    return paths


def _clear(dst: str) -> None:
    """Removes what an earlier run (anonymization or I/O floor) wrote into `dst`; every path is
    checked before the first removal."""
    paths = _outputs_to_remove(dst)
    paths += [root_paths.resolve_inside(dst, name, f'dst {dst}') for name in metadata_files()]
    for path in paths:
        if os.path.isfile(path):
            os.remove(path)


def prepare_dst(dst: str, settings: dict, overwrite: bool, floor: bool) -> str:
    """Checks that `dst` may receive this run's output and writes the config file.

    Args:
      dst: the output folder (created if missing).
      settings: the run's settings (`engine_plan.settings_of`).
      overwrite: clear another run's output instead of refusing.
      floor: an I/O-floor benchmark run.

    Returns:
      The config hash.

    Raises:
      ValueError: `dst` holds another run's output and `overwrite` is False.
    """
    digest = config_hash(settings)
    if os.path.isdir(dst):
        own, other = read_config(dst, floor), read_config(dst, not floor)
        problem = None
        if other is not None:
            problem = (
                'holds an I/O-floor benchmark output (not anonymized)'
                if not floor
                else 'holds an anonymized dataset'
            )
        elif own is not None and own['config_hash'] != digest:
            problem = (
                f'was written with different settings (config hash '
                f'{own["config_hash"][:12]}, now {digest[:12]}): '
                f'{canonical_json(own.get("settings"))}'
            )
        elif own is None and _looks_like_wider(dst):
            problem = 'holds a WIDER-layout folder that this engine did not write'
        if problem:
            if not overwrite:
                raise ValueError(
                    f'dst {dst} {problem}; refusing to mix outputs. Use another '
                    'dst, or overwrite=True to replace it.'
                )
            _clear(dst)
    os.makedirs(dst, exist_ok=True)
    return write_config(dst, settings, floor)
