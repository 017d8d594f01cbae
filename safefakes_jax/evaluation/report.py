"""The paper's table and figures from a set of registry entries (`evaluation/run_registry.py`).

* Table II (`table_ii.md`, `table_ii.csv`): the Pearson correlation of each image metric of a
  training set (L1, L2, PSNR, SSIM, LPIPS, FID, FID-dlib) with the mean AP of the detector
  trained on it, over All / GAN / Conventional runs (the original set is not a point: its
  metrics are zero by definition), with n per column; r is empty below 2 points or for a
  constant column, and flagged where n < 3 (a line through two points says nothing).
* Fig. 4 (`fig4_ap_by_anonymizer.png`): grouped bars of easy / medium / hard AP per anonymizer
  (the mean over its runs).
* Fig. 6 (`fig6_ap_vs_detector_steps.png`): mean AP against detector iterations per run.
* Fig. 7 / 9 (`fig7_ap_vs_gan_training_faces.png`, `fig9_ap_vs_gan_training_steps.png`): mean AP
  against the GAN's training-set size and training iterations (runs whose entry knows them).
* Privacy-utility (`privacy_utility.png`), what the paper lacks: rank-1 re-identification rate
  of each training set's faces against mean AP, one point per run.

A figure without data is not drawn; `write` returns what it wrote and what it left out, why.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

from safefakes_jax.data import atomic_io

METRICS = ('l1', 'l2', 'psnr', 'ssim', 'lpips', 'fid', 'fid_dlib')
GROUPS = (('All', ('gan', 'conventional')), ('GAN', ('gan',)), ('Conventional', ('conventional',)))


def _metric(entry: dict, name: str) -> float | None:
    value = (entry.get('metrics') or {}).get(name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def table_ii(entries: Sequence[dict]) -> list[dict[str, Any]]:
    """One row per metric: `{metric, <group>: r or None, <group>_n: n}` (module docstring)."""
    rows = []
    for name in METRICS:
        row: dict[str, Any] = {'metric': name}
        for group, families in GROUPS:
            points = [
                (_metric(e, name), e['ap']['mean'])
                for e in entries
                if e.get('family') in families and _metric(e, name) is not None
            ]
            x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
            r = None
            if len(points) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
                r = float(scipy.stats.pearsonr(x, y).statistic)
            row[group], row[f'{group}_n'] = r, len(points)
        rows.append(row)
    return rows


def table_markdown(rows: Sequence[dict]) -> str:
    names = [g for g, _ in GROUPS]
    lines = [
        '| metric | ' + ' | '.join(names) + ' |',
        '|---|' + '---|' * len(names),
    ]
    for row in rows:
        cells = []
        for g in names:
            r, n = row[g], row[f'{g}_n']
            text = '' if r is None else f'{r:.3f}'
            cells.append(f'{text} (n={n}{", n < 3!" if 0 < n < 3 else ""})')
        lines.append(f'| {row["metric"]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def table_csv(rows: Sequence[dict]) -> str:
    out = io.StringIO()
    fields = ['metric'] + [k for g, _ in GROUPS for k in (g, f'{g}_n')]
    writer = csv.DictWriter(out, fields, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
    atomic_io.write_bytes(path, buf.getvalue())


def _fig4(entries, path, plt) -> None:
    names = sorted({e['anonymizer'] for e in entries}, key=lambda a: (a != 'original', a))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 4))
    width = 0.27
    for k, level in enumerate(('easy', 'medium', 'hard')):
        values = [np.mean([e['ap'][level] for e in entries if e['anonymizer'] == a]) for a in names]
        ax.bar(np.arange(len(names)) + (k - 1) * width, values, width, label=level)
    ax.set_xticks(np.arange(len(names)), names, rotation=20)
    ax.set_ylabel('AP on the unaltered val split')
    ax.set_ylim(0, 1)
    ax.set_title('DSFD trained on each anonymized set (Fig. 4)')
    ax.legend(title='WIDER subset')
    _save(fig, path)


def _lines(entries, path, plt, x_of, xlabel, title) -> bool:
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for e in entries:
        points = x_of(e)
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            run = f' ({e["run"]})' if e.get('run') else ''
            ax.plot(xs, ys, marker='o', label=e['anonymizer'] + run)
            drawn = True
    if drawn:
        ax.set_xlabel(xlabel)
        ax.set_ylabel('mean AP (easy, medium, hard)')
        ax.set_title(title)
        ax.legend(fontsize=8)
        _save(fig, path)
    plt.close(fig)
    return drawn


def _generator_points(entries, key):
    """(x, mean AP) per GAN anonymizer, x from its `anonymizer_training[key]`."""
    by_method: dict[str, list] = {}
    for e in entries:
        value = (e.get('anonymizer_training') or {}).get(key)
        if e.get('family') == 'gan' and isinstance(value, int | float):
            by_method.setdefault(e['anonymizer'], []).append((float(value), e['ap']['mean']))
    return [{'anonymizer': a, 'points': p} for a, p in by_method.items()]


def write(entries: Sequence[dict], out: str) -> dict[str, list[str]]:
    """Writes the table and the figures (module docstring) to `out`; returns
    `{'written': [...], 'skipped': ['<file>: <why>', ...]}`."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not entries:
        raise ValueError('no registry entries: nothing to report')
    os.makedirs(out, exist_ok=True)
    written, skipped = [], []
    rows = table_ii(entries)
    for name, text in (('table_ii.md', table_markdown(rows)), ('table_ii.csv', table_csv(rows))):
        atomic_io.write_text(os.path.join(out, name), text)
        written.append(name)
    _fig4(entries, os.path.join(out, 'fig4_ap_by_anonymizer.png'), plt)
    written.append('fig4_ap_by_anonymizer.png')

    def history(e):
        points = [(h['step'], (h['easy'] + h['medium'] + h['hard']) / 3) for h in e['ap_history']]
        return points + [(e['detector_steps'], e['ap']['mean'])]

    figures = [
        ('fig6_ap_vs_detector_steps.png', entries, history, 'detector iterations', 'Fig. 6'),
        (
            'fig7_ap_vs_gan_training_faces.png',
            _generator_points(entries, 'train_faces'),
            lambda g: g['points'],
            "faces in the GAN's training set",
            'Fig. 7',
        ),
        (
            'fig9_ap_vs_gan_training_steps.png',
            _generator_points(entries, 'step'),
            lambda g: g['points'],
            'GAN training iterations',
            'Fig. 9',
        ),
    ]
    for name, items, x_of, xlabel, fig in figures:
        title = f'Mean AP against {xlabel} ({fig})'
        if _lines(items, os.path.join(out, name), plt, x_of, xlabel, title):
            written.append(name)
        else:
            skipped.append(f'{name}: no runs with that information')
    points = [
        (e['metrics']['identity']['rank1'], e['ap']['mean'], e['anonymizer'])
        for e in entries
        if isinstance((e.get('metrics') or {}).get('identity'), dict)
        and isinstance(e['metrics']['identity'].get('rank1'), int | float)
    ]
    if points:
        fig, ax = plt.subplots(figsize=(6, 4))
        for x, y, label in points:
            ax.scatter(x, y)
            ax.annotate(label, (x, y), textcoords='offset points', xytext=(4, 4))
        ax.set_xlabel('rank-1 re-identification of the training faces (lower: more private)')
        ax.set_ylabel('mean AP of the detector trained on them')
        ax.set_title('Privacy against utility, one point per run')
        _save(fig, os.path.join(out, 'privacy_utility.png'))
        plt.close(fig)
        written.append('privacy_utility.png')
    else:
        skipped.append('privacy_utility.png: no run whose training set has identity metrics')
    plt.close('all')
    return {'written': written, 'skipped': skipped}
