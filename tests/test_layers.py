"""The layering rule: a module of `safefakes_jax` imports only from its own layer or below.

Bottom to top: the I/O level (`config_utils`, `data.atomic_io`, `data.images`,
`data.root_paths`) -> `data` -> `models` -> `detection`, `anonymizers` -> `evaluation` ->
`train` -> `pipeline`; `launch/`, `tools/` and `benchmarks/` sit on top and may import anything.
Every import is found by parsing (also those inside functions), so a lazy import cannot hide a
cycle between layers.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'safefakes_jax')
IO_LEVEL = {'config_utils', 'sharding', 'data.atomic_io', 'data.images', 'data.root_paths'}
RANKS = {
    'io': 0,
    'data': 1,
    'models': 2,
    'detection': 3,
    'anonymizers': 3,
    'evaluation': 4,
    'train': 5,
    'pipeline': 6,
}


def layer(module: str) -> str:
    """The layer of a dotted module name relative to the package (`data.wider` -> 'data')."""
    if module in IO_LEVEL or module == '__init__':
        return 'io'
    return module.split('.')[0]


def modules() -> list[str]:
    out = []
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith('.py'):
                rel = os.path.relpath(os.path.join(folder, file), PACKAGE)[:-3]
                out.append(rel.replace(os.sep, '.').removesuffix('.__init__'))
    return sorted(out)


def imports(module: str) -> list[tuple[int, str]]:
    """(line, imported module relative to the package) of every package import of `module`."""
    path = os.path.join(PACKAGE, *module.split('.'))
    path = path + '.py' if os.path.isfile(path + '.py') else os.path.join(path, '__init__.py')
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            names = [f'{base}.{a.name}' for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith('safefakes_jax.'):
                rel = name.removeprefix('safefakes_jax.')
                # `from safefakes_jax.data import wider` names the module data.wider.
                out.append((node.lineno, rel))
    return out


def test_layers_cover_every_module():
    assert {layer(m) for m in modules()} <= set(RANKS), sorted(
        m for m in modules() if layer(m) not in RANKS
    )


@pytest.mark.parametrize('module', modules())
def test_no_module_imports_a_layer_above_its_own(module):
    own = RANKS[layer(module)]
    bad = [
        f'safefakes_jax/{module.replace(".", "/")}.py:{line} imports safefakes_jax.{name} '
        f'({layer(name)} is above {layer(module)})'
        for line, name in imports(module)
        if RANKS.get(layer(name), -1) > own
    ]
    assert not bad, '\n'.join(bad)
