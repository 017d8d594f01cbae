"""Precision-recall figures of WIDER FACE results, the way the WIDER FACE site compares detectors.

One panel per setting (easy, medium, hard); every result (a detector, or the same detector
trained on differently anonymized data) is one curve, labelled with its AP.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use('Agg')  # Files only; no display is needed (or present on servers).
import matplotlib.pyplot as plt  # noqa: E402

from safefakes_jax.data import atomic_io  # noqa: E402
from safefakes_jax.evaluation import wider_ap  # noqa: E402


def plot_pr_curves(
    results: Mapping[str, wider_ap.APResult], path: str | os.PathLike, title: str = 'WIDER FACE val'
) -> None:
    """Draws the PR curves of `results` ({label: evaluate(...) result}) into one PNG/PDF/SVG."""
    if not results:
        raise ValueError('plot_pr_curves needs at least one result')
    fig, axes = plt.subplots(1, len(wider_ap.SETTINGS), figsize=(15, 4.8), sharey=True)
    for ax, setting in zip(axes, wider_ap.SETTINGS, strict=True):
        # Best first, as on the WIDER FACE site, so the legend reads as a ranking.
        ranked = sorted(results.items(), key=lambda kv: -(kv[1][setting] or 0.0))
        for label, result in ranked:
            curve = result.curves[setting]
            ax.plot(curve.recall, curve.precision, linewidth=2, label=f'{label} ({curve.ap:.3f})')
        ax.set(title=f'{title}: {setting}', xlabel='Recall', xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(True, alpha=0.3)
        ax.legend(loc='lower left', fontsize=9)
    axes[0].set_ylabel('Precision')
    fig.tight_layout()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip('.') or 'png'
    with atomic_io.atomic_open(path, 'wb') as f:
        fig.savefig(f, format=fmt, dpi=110)
    plt.close(fig)
