"""TensorFlow's start-up noise stays out of a hospital's process (common/quiet.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from common.quiet import quiet_tensorflow

ROOT = Path(__file__).resolve().parent.parent
# What a ClientApp process does: load the app (as Flower does), then build a trainer and
# run one training step and one evaluation, as the first message would.
CLIENT_PROCESS = """
import numpy as np
import client.app
from client.cache import PROCESS_CACHE
from common.config import TrainConfig
from common.data.schema import DataSpec, Split

spec = DataSpec(class_names=("a", "b"), image_size=16, channels=1, min_examples=1)
trainer = PROCESS_CACHE.trainer("cnn-small", spec)
data = Split(images=np.zeros((4, 16, 16, 1), np.float32), labels=np.array([0, 1, 0, 1]))
config = TrainConfig(
    local_epochs=1, batch_size=4, learning_rate=0.01, proximal_mu=0.0, local_steps=0,
    local_optimizer="adam", local_momentum=0.9, augment=False, augment_shift=0.1,
    augment_rotation=10.0, augment_intensity=0.1, augment_contrast=0.1,
)
result = trainer.fit(trainer.model.get_weights(), data, config, seed=0)
trainer.evaluate(result.weights, data)
print("done")
"""
NOISE = (
    "absl::InitializeLog",
    "oneDNN",
    "cpu_feature_guard",
    "cuInit",
    "cuda",
    "UNKNOWN ERROR (303)",
    "DeprecationWarning",
    "FutureWarning",
)


def run_client_process(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", CLIENT_PROCESS],
        cwd=ROOT,
        env={**environment, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_client_process_prints_no_tensorflow_noise() -> None:
    done = run_client_process()

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert [marker for marker in NOISE if marker in done.stderr] == [], done.stderr


def test_loading_the_client_app_does_not_import_tensorflow() -> None:
    code = "import sys, client.app; print('tensorflow' in sys.modules, 'keras' in sys.modules)"

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert done.stdout.strip() == "False False", done.stderr


def test_a_user_who_asks_for_tensorflow_logs_gets_them() -> None:
    """The same process with ``TF_CPP_MIN_LOG_LEVEL=0`` shows TensorFlow's lines: the
    silence above comes from common/quiet.py, not from a TensorFlow that prints nothing."""
    done = run_client_process(TF_CPP_MIN_LOG_LEVEL="0")

    assert done.returncode == 0, done.stderr
    assert "absl::InitializeLog" in done.stderr or "I0000" in done.stderr


@pytest.mark.parametrize(
    ("category", "module", "shown"),
    [
        (DeprecationWarning, "keras.src.backend.tensorflow.core", False),
        (DeprecationWarning, "keras", False),
        (DeprecationWarning, "kerasx", True),
        (UserWarning, "keras.src.backend.tensorflow.core", True),
    ],
)
def test_only_keras_deprecation_warnings_are_hidden(
    monkeypatch: pytest.MonkeyPatch, category: type[Warning], module: str, shown: bool
) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_tensorflow()
        warnings.warn_explicit("message", category, "file.py", 1, module=module)

    assert len(caught) == int(shown)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # a user's setting is kept
