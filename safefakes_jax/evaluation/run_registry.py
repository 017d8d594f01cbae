"""The run registry: one entry per detector run, which the report (`evaluation/report.py`) reads.

Every DSFD run (`launch/train.py --config=configs/dsfd_*.py`) ends by writing
`<workdir>/registry_entry.json` next to its `results.json`:

* `run` (the workdir's name), `anonymizer` (`config.dataset`: `original`, `blur`, ...), `family`
  (`original`, `conventional` or `gan`), and `anonymization` (the training set's config hash and
  settings, the method's parameters and weights sha256 included; null for the original set);
* `training_dataset` (absolute path) and, for a GAN, what trained its generator
  (`anonymizer_training`: dataset, steps, training faces, from the anonymization settings);
* `detector_steps`, `ap` (`easy`, `medium`, `hard`, `mean`) and `ap_history` (the periodic
  evaluations of the run: `step`, `easy`, `medium`, `hard`).

The metrics of a training set are computed separately (`launch/metrics.py`, whose JSON names
the set as `anon`); `read_all` attaches the metrics JSONs it is given to the entries whose
`training_dataset` they describe. Entries and metrics files are untrusted input: a malformed
one is an error naming the file.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from safefakes_jax.data import atomic_io

ENTRY_FILE = 'registry_entry.json'
GANS = ('deepprivacy', 'ciagan', 'sun2018')
LEVELS = ('easy', 'medium', 'hard')


class RegistryError(ValueError):
    """A malformed registry entry or metrics file (the message names it)."""


def family(anonymizer: str) -> str:
    """'original', 'gan' or 'conventional'."""
    if anonymizer == 'original':
        return 'original'
    return 'gan' if anonymizer in GANS else 'conventional'


def entry_from_results(results: Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """The registry entry of a detector run from its `results.json` contents."""
    anonymizer = str(results.get('anonymizer') or 'original')
    anonymization = results.get('anonymization')
    settings = (anonymization or {}).get('settings') or {}
    generator = (settings.get('anonymizer') or {}).get('generator')
    ap = {k: float(results[k]) for k in LEVELS}
    history = [
        {'step': int(e['step']), **{k: float(e[k]) for k in LEVELS}}
        for e in results.get('evaluations', [])
        if all(k in e for k in LEVELS)
    ]
    return {
        'run': os.path.basename(os.path.normpath(workdir)),
        'anonymizer': anonymizer,
        'family': family(anonymizer),
        'anonymization': anonymization,
        'training_dataset': os.path.abspath(str(results.get('training_dataset', ''))),
        'anonymizer_training': generator,
        'detector_steps': int(results['steps']),
        'ap': ap | {'mean': sum(ap.values()) / 3},
        'ap_history': history,
    }


def write(workdir: str, results: Mapping[str, Any]) -> str:
    """Writes the run's entry to `<workdir>/registry_entry.json` (atomically); returns the path."""
    path = os.path.join(workdir, ENTRY_FILE)
    entry = entry_from_results(results, workdir)
    atomic_io.write_text(path, json.dumps(entry, indent=2) + '\n')
    return path


def _load(path: str) -> dict:
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistryError(f'{path}: unreadable JSON ({e})') from None
    if not isinstance(data, dict):
        raise RegistryError(f'{path}: expected a JSON object')
    return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_entry(entry: Mapping[str, Any], path: str) -> None:
    """Raises RegistryError unless `entry` has the fields the report uses."""
    ap = entry.get('ap')
    if not isinstance(entry.get('anonymizer'), str) or not isinstance(ap, dict):
        raise RegistryError(f'{path}: needs "anonymizer" (a name) and "ap" (an object)')
    if not all(_number(ap.get(k)) for k in (*LEVELS, 'mean')):
        raise RegistryError(f'{path}: "ap" needs finite easy, medium, hard and mean')
    if not _number(entry.get('detector_steps')):
        raise RegistryError(f'{path}: "detector_steps" must be a number')
    for e in entry.get('ap_history') or []:
        if not isinstance(e, dict) or not all(_number(e.get(k)) for k in ('step', *LEVELS)):
            raise RegistryError(f'{path}: each "ap_history" item needs step, easy, medium, hard')


def read_all(runs: str | Sequence[str], metrics: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every entry of `runs`, sorted by anonymizer and run name, with the metrics files'
    `metrics` attached (`metrics`: metrics JSONs or folders of them) to the entry whose
    `training_dataset` they name.

    Args:
      runs: one or more of: an entry file; a run folder (holding `registry_entry.json`); a
        folder of runs (`*/registry_entry.json`, and `*.json` entries in the folder itself).
      metrics: `launch/metrics.py` outputs or folders of them.

    Raises:
      FileNotFoundError: an item of `runs` does not exist. RegistryError: a malformed file.
    """
    paths = []
    for item in [runs] if isinstance(runs, str) else runs:
        if os.path.isfile(item):
            paths.append(item)
        elif os.path.isfile(os.path.join(item, ENTRY_FILE)):
            paths.append(os.path.join(item, ENTRY_FILE))
        elif os.path.isdir(item):
            paths += sorted(glob.glob(os.path.join(item, '*', ENTRY_FILE)))
            paths += sorted(glob.glob(os.path.join(item, '*.json')))
        else:
            raise FileNotFoundError(f'runs folder or entry not found: {item}')
    entries = []
    for path in paths:
        entry = _load(path)
        check_entry(entry, path)
        entries.append(dict(entry, source=path, metrics=entry.get('metrics') or {}))
    by_set: dict[str, dict] = {}
    for item in metrics:
        files = sorted(glob.glob(os.path.join(item, '*.json'))) if os.path.isdir(item) else [item]
        for path in files:
            data = _load(path)
            if not isinstance(data.get('anon'), str) or not isinstance(data.get('metrics'), dict):
                raise RegistryError(f'{path}: not a launch/metrics.py output ("anon", "metrics")')
            by_set[os.path.abspath(data['anon'])] = data['metrics']
    for entry in entries:
        found = by_set.get(os.path.abspath(str(entry.get('training_dataset', ''))))
        if found:
            entry['metrics'] = found
    return sorted(entries, key=lambda e: (e['anonymizer'], str(e.get('run'))))
