"""Quiet start-up for every process that imports TensorFlow.

TensorFlow 2.21 prints a dozen lines on import and on first use that say nothing about
a run: "All log messages before absl::InitializeLog() is called ...", oneDNN's and
``cudart_stub``'s notes (twice, once per shared library), ``cpu_feature_guard`` and, on
a machine without a GPU, ``failed call to cuInit: ... UNKNOWN ERROR (303)`` — easy to
confuse with Flower's exit code 303. Keras 3 adds a ``DeprecationWarning`` from numpy
and Ray's driver a ``FutureWarning`` about accelerator variables.

Measured on TF 2.21 (CPU): ``TF_CPP_MIN_LOG_LEVEL=3`` removes ``cpu_feature_guard`` and
the cuInit line, but not the lines written before absl's logging is initialised, which
no environment variable reaches (``CUDA_VISIBLE_DEVICES=-1``, ``GLOG_minloglevel`` and
``ABSL_MIN_LOG_LEVEL`` change nothing). :func:`import_keras` therefore points file
descriptor 2 at ``/dev/null`` while TensorFlow is first imported, unless the user asked
for TensorFlow's logs (``TF_CPP_MIN_LOG_LEVEL=0``). Nothing here runs at import time:
the process caches and the ServerApp call these functions before their first model.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "3"  # the cuInit line is an ERROR-level (2) message
# Ray's system setting ``preload_python_modules``, read from the environment by the raylet
# a driver starts: every worker imports these modules before it loads any actor.
RAY_PRELOAD_VARIABLE = "RAY_preload_python_modules"
WORKER_PRELOAD_MODULE = "common.tf_preload"


def quiet_tensorflow() -> None:
    """Default TensorFlow's C++ logs to fatal only and hide Keras's deprecation warnings.

    ``setdefault``: a user who sets ``TF_CPP_MIN_LOG_LEVEL`` keeps their choice. Takes
    effect for TensorFlow only when called before TensorFlow is imported.
    """
    os.environ.setdefault(LOG_LEVEL_VARIABLE, QUIET_LOG_LEVEL)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"keras(\.|$)")


def quiet_ray() -> None:
    """Call in a Ray driver before Ray starts: quiet workers and the driver's warning.

    Flower's simulation package imports TensorFlow at module level, so a Ray actor would
    print TensorFlow's start-up lines while loading Flower's actor class, before any
    fedclinic code runs. Ray's ``preload_python_modules`` setting makes every worker
    import :data:`WORKER_PRELOAD_MODULE` first, which imports TensorFlow quietly; the
    workers inherit ``TF_CPP_MIN_LOG_LEVEL`` from this process. Both are defaults a user
    may override. The driver's ``FutureWarning`` about ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO``
    is hidden, not acted on: setting that variable would change which GPUs Ray's
    CPU-only actors see.
    """
    os.environ.setdefault(LOG_LEVEL_VARIABLE, QUIET_LOG_LEVEL)
    os.environ.setdefault(RAY_PRELOAD_VARIABLE, WORKER_PRELOAD_MODULE)
    warnings.filterwarnings(
        "ignore", message="Tip: In future versions of Ray", category=FutureWarning
    )


def import_keras() -> ModuleType:
    """Keras (and TensorFlow), imported after :func:`quiet_tensorflow` and without the
    start-up lines TensorFlow writes straight to the process's standard error."""
    quiet_tensorflow()
    if "tensorflow" not in sys.modules and _logs_unwanted():
        with _stderr_discarded():
            return importlib.import_module("keras")
    return importlib.import_module("keras")


def _logs_unwanted() -> bool:
    return os.environ.get(LOG_LEVEL_VARIABLE, "0").strip() not in ("", "0")


@contextmanager
def _stderr_discarded() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the block (process-wide: keep the
    block short; Python exceptions raised inside it are shown after it)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to protect
        saved = -1
    if saved < 0:
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
