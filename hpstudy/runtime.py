"""Process-wide settings: seeds, determinism, devices, precision, and the package versions in use."""

from __future__ import annotations

import logging
import os
import platform
import random
import time
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["seed_everything", "configure_devices", "package_versions", "quiet_tensorflow", "resident_mib",
           "process_start_time"]

log = logging.getLogger("hpstudy")

_VERSIONED = ("tensorflow", "keras", "keras-tuner", "numpy", "pandas", "scikit-learn", "matplotlib", "hpstudy")


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info lines (must run before TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and Keras/TensorFlow; optionally turn on TF op determinism.

    Determinism makes GPU runs repeatable at some speed cost; some ops then raise instead of
    running non-deterministically.
    """
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def configure_devices(*, mixed_precision: bool = False, memory_growth: bool = True) -> list[str]:
    """Turn on GPU memory growth and (optionally) mixed precision; returns the GPUs seen.

    Mixed precision only pays on GPUs with tensor cores; on CPU it is left off with a note.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        if memory_growth:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # devices already initialized in this process
                pass
    if mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        if mixed_precision:
            log.info("note: mixed_precision requested but no GPU is visible; training stays in float32")
        # the policy is process-wide: a study without mixed precision must not inherit an earlier one's
        keras.mixed_precision.set_global_policy("float32")
    return [gpu.name for gpu in gpus]


def package_versions() -> dict[str, Any]:
    """Versions of Python and the packages that decide a study's results."""
    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def resident_mib() -> float | None:
    """Resident memory of this process in MiB (``VmRSS``; Linux only, else None)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def process_start_time() -> float | None:
    """When this process started, as ``time.time()`` (Linux: ``/proc``; else None).

    A child process of ``trials_per_process`` counts its start (Python, TensorFlow import, data check) in
    the wall time of its first trial.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime", encoding="ascii") as uptime:
            since_boot = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - max(since_boot - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
