"""Test set-up: 8 fake CPU devices for JAX and no GPU for TensorFlow, before either loads."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ['CUDA_VISIBLE_DEVICES'] = ''  # Tests never need a GPU; keeps TF and JAX on the CPU.
