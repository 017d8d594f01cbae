r"""Prints the parameter overview of every network a config builds (shapes only, no weights).

  python tools/model_summary.py --config=configs/dsfd_original.py
  python tools/model_summary.py --config=configs/dsfd_original.py:smoke --per_param
  python tools/model_summary.py --config=configs/deepprivacy_fdf.py

Networks are built with `jax.eval_shape` at the config's input size, so nothing is
materialised (the full DSFD costs no memory). A DSFD config builds the detector,
`DSFD(width=config.model.width if set, else 1.0, num_classes=2)` at `config.data.image_size`;
a GAN config (`config.trainer`: deepprivacy, ciagan, sun2018) its networks (generator,
discriminator; CIAGAN also its identity network) at
`config.model.resolution` (`params[generator]=46924931` for the paper's).
Output: a table per network (top-level blocks, PyTorch-style group names: `vgg`, `extras`,
`fpn_fem`, `loc_pal1`, ...), the per-parameter table with `--per_param`, and last one line per
network, `params[<name>]=<count>` (e.g. `params[detector]=49793432` for the paper's DSFD).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:arg]).', lock_config=True
)
_PER_PARAM = flags.DEFINE_bool('per_param', False, 'Also print every parameter (clu table).')

_INDEXED = re.compile(r'^(.+)_\d+$')


def _get(config: Any, dotted: str, default: Any) -> Any:
    """`config.a.b` if present, else `default` (for optional fields)."""
    node = config
    for part in dotted.split('.'):
        if part not in node:
            return default
        node = node[part]
    return node


def networks(config: Any) -> dict[str, tuple[str, Any, Callable[[], Any]]]:
    """The networks `config` builds, with their abstract `init` inputs.

    Args:
        config: an experiment config (`configs/*.py`).

    Returns:
        name -> (description, Flax module, function returning the `init` arguments as
        `jax.ShapeDtypeStruct`s / keys).
    """
    import jax
    import jax.numpy as jnp

    from safefakes_jax.models import dsfd

    trainer = _get(config, 'trainer', 'detector')
    if trainer != 'detector':  # A GAN trainer lists its own networks.
        import importlib

        module = importlib.import_module(f'safefakes_jax.train.{trainer}_trainer')
        return module.summary_networks(config)
    size = int(_get(config, 'data.image_size', 640))
    width = float(_get(config, 'model.width', 1.0))
    detector = dsfd.DSFD(width=width, num_classes=2)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return {
        'detector': (
            f'DSFD(width={width}, num_classes=2) on {size}x{size}x3',
            detector,
            lambda: (jax.random.key(0), images),
        )
    }


def block_table(shapes: Any) -> tuple[list[tuple[str, int, int]], int]:
    """Groups a params shape tree by top-level block (indexed blocks `x_0`, `x_1` -> `x`).

    Args:
        shapes: params pytree of arrays or `jax.ShapeDtypeStruct` (anything with `.shape`).

    Returns:
        ([(block, #tensors, #params)] in first-seen order, total #params).
    """
    import numpy as np
    from flax import traverse_util

    rows: dict[str, list[int]] = {}
    for path, leaf in traverse_util.flatten_dict(dict(shapes)).items():
        match = _INDEXED.match(path[0])
        row = rows.setdefault(match.group(1) if match else path[0], [0, 0])
        row[0] += 1
        row[1] += int(np.prod(leaf.shape, dtype=np.int64))
    table = [(name, n, count) for name, (n, count) in rows.items()]
    return table, sum(count for *_, count in table)


def format_table(table: list[tuple[str, int, int]], total: int) -> str:
    """Renders `block_table` output as fixed-width text."""
    width = max(len('total'), *(len(name) for name, *_ in table))
    lines = [f'{"block":<{width}}  {"tensors":>7}  {"params":>12}  {"share":>6}']
    for name, n, count in table:
        lines.append(f'{name:<{width}}  {n:>7}  {count:>12,}  {count / max(total, 1):>6.1%}')
    lines.append(f'{"total":<{width}}  {sum(n for _, n, _ in table):>7}  {total:>12,}')
    return '\n'.join(lines)


def main(argv: list[str]) -> None:
    """Prints the summaries; the `params[...]` lines come last."""
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    import jax

    config = _CONFIG.value
    totals = {}
    for name, (description, module, init_args) in networks(config).items():
        variables = jax.eval_shape(module.init, *init_args())
        params = variables['params']
        table, totals[name] = block_table(params)
        print(f'== {name}: {description}')
        print(format_table(table, totals[name]))
        if _PER_PARAM.value:
            from clu import parameter_overview

            print(parameter_overview.get_parameter_overview(params, include_stats=False))
        print()
    for name, count in totals.items():
        print(f'params[{name}]={count}')


if __name__ == '__main__':
    app.run(main)
