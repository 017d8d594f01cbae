"""FID between original and anonymized faces: the FID Inception's pool3 features of both sets,
their Gaussian statistics, and the Frechet distance (`image_metrics.frechet_distance`).

The Inception weights cannot be downloaded here and no package ships them: they are imported
once from the file that pytorch-fid users have,

  python tools/convert_torch_weights.py --format=fid_inception \\
      --src=pt_inception-2015-12-05-6726825d.pth --out=pretrained/fid_inception

and `load(path)` reads that folder. Without it FID is unavailable (`FIDUnavailableError`, whose
message is that command); no value is ever made up with other weights.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from safefakes_jax.evaluation import image_metrics
from safefakes_jax.models import torch_import

DEFAULT_WEIGHTS = 'pretrained/fid_inception'
IMPORT_COMMAND = (
    'python tools/convert_torch_weights.py --format=fid_inception '
    '--src=pt_inception-2015-12-05-6726825d.pth --out=' + DEFAULT_WEIGHTS
)


class FIDUnavailableError(FileNotFoundError):
    """No converted FID Inception where asked (the message says how to import one)."""


@functools.lru_cache(maxsize=2)
def load(path: str = DEFAULT_WEIGHTS) -> Callable[[Any], np.ndarray]:
    """A jit-compiled `images [N, H, W, 3] in [0, 1] -> float32 [N, 2048]` with the weights of
    a `--format=fid_inception` folder.

    Raises:
      FIDUnavailableError: no such folder or no conversion in it.
      ValueError: a conversion of another model.
    """
    from safefakes_jax.models import inception

    try:
        info = torch_import.load_conversion_info(path)
    except FileNotFoundError:
        raise FIDUnavailableError(
            f'FID unavailable: no FID Inception weights at {os.path.abspath(path)}; import '
            f'them with: {IMPORT_COMMAND}'
        ) from None
    if info.get('format') != 'fid_inception':
        raise ValueError(f'{path}: a {info.get("format")!r} conversion, not fid_inception')
    variables = jax.device_put(torch_import.load_converted(path))
    model = inception.FIDInception()
    apply = jax.jit(model.apply)
    return lambda images: np.asarray(apply(variables, images), np.float32)


def frechet_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between the Gaussians of two feature sets [N, D] (N >= 2 each)."""
    return image_metrics.frechet_distance(
        *image_metrics.feature_statistics(a), *image_metrics.feature_statistics(b)
    )
