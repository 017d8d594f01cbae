r"""The paper's Table II and figures from a set of detector runs (their registry entries).

  python launch/report.py --runs workdirs --metrics cache/metrics --out cache/report

`--runs` (repeatable) names a run folder (each DSFD run writes
`<workdir>/registry_entry.json`), a folder of run folders or an entry file; `--metrics`
(repeatable) names `launch/metrics.py` outputs or folders of them, matched to runs by
training set. Writes `table_ii.md` / `.csv`, `fig4_ap_by_anonymizer.png`,
`fig6_ap_vs_detector_steps.png`, `fig7_ap_vs_gan_training_faces.png`,
`fig9_ap_vs_gan_training_steps.png` and `privacy_utility.png` (those with data; the others are
listed with the reason). See `safefakes_jax/evaluation/report.py`. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.evaluation import report, run_registry  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--runs', action='append', required=True, help='run folder, folder of runs or entry file'
    )
    parser.add_argument('--metrics', action='append', default=[], help='metrics JSON or folder')
    parser.add_argument('--out', required=True, help='output folder')
    args = parser.parse_args(argv)
    try:
        entries = run_registry.read_all(args.runs, args.metrics)
        done = report.write(entries, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f'report: error: {e}', file=sys.stderr)
        return 2
    print(f'{len(entries)} runs: {", ".join(sorted({e["anonymizer"] for e in entries}))}')
    print(report.table_markdown(report.table_ii(entries)), end='')
    for name in done['written']:
        print(f'wrote {os.path.join(args.out, name)}')
    for line in done['skipped']:
        print(f'not drawn: {line}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
