from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.supercore.task_identity import TaskIdentity

from tests.factories import E2E_HOSPITALS, E2E_OVERRIDES, central_set

ROOT = Path(__file__).resolve().parent.parent
# Seconds an e2e test may take, its fixtures' set-up included: above its own subprocess
# timeouts (the shared simulation 600 s, then a killed and a resumed run of 300 s each), so
# those fail first with the subprocess's output. Other tests get `timeout` in pyproject.toml.
E2E_TIMEOUT = 1500


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Flower stamps replies with the running task's identity; unit tests set one."""
    previous = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = previous


@pytest.fixture(scope="session")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One uninterrupted real simulation (with central evaluation) and its overrides.

    Its run directory is ``<out>/run``; ``<out>/replies.jsonl`` records every reply.
    """
    out = tmp_path_factory.mktemp("e2e")
    overrides = {**E2E_OVERRIDES, "central-eval-path": str(central_set(out / "central.npz"))}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    completed = subprocess.run(
        [
            sys.executable,
            "tests/e2e_simulation.py",
            str(out),
            str(E2E_HOSPITALS),
            json.dumps(overrides),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return out, overrides


@pytest.fixture(scope="module")
def trainer() -> Any:
    """One `cnn-small` LocalTrainer per test module (the training and DP tests share it)."""
    import keras

    from client.training import LocalTrainer
    from common.models import build_model
    from tests.factories import data_spec

    keras.utils.set_random_seed(0)
    return LocalTrainer(build_model("cnn-small", data_spec()))


@pytest.fixture
def start() -> Any:
    """The untrained `cnn-small` weights: each test starts from them, not from the previous
    test's fit (modules that federate override it with their own starting arrays)."""
    import keras

    from common.models import build_model
    from tests.factories import data_spec

    keras.utils.set_random_seed(0)
    return build_model("cnn-small", data_spec()).get_weights()
