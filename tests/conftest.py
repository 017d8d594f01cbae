"""Test set-up: 8 fake CPU devices for JAX and no GPU for TensorFlow, before either loads."""

import os

# Backend optimisation level 0: XLA's CPU compile of a tiny DSFD drops from ~60 s to ~10 s, and
# the tests' networks are too small for the slower code to matter.
os.environ.setdefault(
    'XLA_FLAGS', '--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0'
)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ['CUDA_VISIBLE_DEVICES'] = ''  # Tests never need a GPU; keeps TF and JAX on the CPU.


import pytest  # noqa: E402


@pytest.fixture(scope='module')
def jax_compile_cache(tmp_path_factory):
    """A persistent XLA compilation cache for one test module (the trainer tests compile the
    same programs several times); removed from the config afterwards."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.set_cache_dir(str(tmp_path_factory.getbasetemp() / 'jax_cache'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    compilation_cache.reset_cache()
    yield
    jax.config.update('jax_compilation_cache_dir', None)
    compilation_cache.reset_cache()
