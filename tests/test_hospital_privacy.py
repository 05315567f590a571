"""The hospital's privacy gate and ledger (client/privacy.py, client/ledger.py).

ε is checked against ``dp-accounting`` called directly here (never through
common/privacy.py), so a mistake in how fedclinic composes events cannot hide.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from flwr.app import ConfigRecord, RecordDict, UserConfig

from client.ledger import FileStore, LedgerError, StateStore, data_fingerprint
from client.privacy import (
    BudgetExhaustedError,
    HospitalBudget,
    PrivacyGate,
    RoundPlan,
    check_train_request,
    hospital_budget,
    plan_round,
)
from common.config import AppConfig
from common.data.schema import Split
from common.errors import ConfigError
from common.privacy import calibrate_noise, local_steps
from tests.factories import app_config

TRAIN = {"local-epochs": 1, "batch-size": 16, "learning-rate": 0.001, "proximal-mu": 0.0}


def split(n: int = 200, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        images=rng.random((n, 28, 28, 1), dtype=np.float32),
        labels=(np.arange(n) % 2).astype(np.int64),
    )


def record_config(**overrides: Any) -> AppConfig:
    values: dict[str, Any] = {
        "dp": "record",
        "dp_epsilon": 100.0,
        "dp_noise_multiplier": 1.1,
        "num_server_rounds": 4,
        "local_epochs": 1,
        "batch_size": 16,
    }
    return app_config(**{**values, **overrides})


def oracle_epsilon(noise: float, q: float, steps: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(noise))
    accountant.compose(dp_event.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def no_calibration(*args: object) -> float:
    raise AssertionError("calibration must not run when a noise multiplier is set")


def plan(config: AppConfig, n: int) -> RoundPlan:
    return plan_round(config, config.train, n, no_calibration)


def gate(tmp_path: Path, data: Split, max_epsilon: float | None = None) -> PrivacyGate:
    path = tmp_path / "ledger.json"
    return PrivacyGate(HospitalBudget(max_epsilon, FileStore(path), path), data)


# --- ε equals dp-accounting's, round after round -----------------------------------------


def test_reported_epsilon_equals_dp_accounting(tmp_path: Path) -> None:
    config, data = record_config(), split(200)
    hospital = gate(tmp_path, data)
    steps = local_steps(200, 16, 1)

    reported = []
    for _ in range(3):
        round_plan = plan(config, len(data))
        hospital.admit(round_plan)
        reported.append(hospital.record(round_plan))

    expected = [oracle_epsilon(1.1, 16 / 200, steps * k, 1e-5) for k in (1, 2, 3)]
    assert reported == pytest.approx(expected, rel=1e-9)
    assert reported[0] < reported[1] < reported[2]


def test_calibrated_noise_ends_the_run_at_the_target(tmp_path: Path) -> None:
    config, data = record_config(dp_noise_multiplier=0.0, dp_epsilon=2.0), split(200)
    hospital = gate(tmp_path, data)
    calibrate = functools.cache(calibrate_noise)

    for _ in range(config.federation.num_server_rounds):
        round_plan = plan_round(config, config.train, len(data), calibrate)
        hospital.admit(round_plan)
        final = hospital.record(round_plan)

    assert round_plan.dp is not None
    total_steps = local_steps(200, 16, 1) * config.federation.num_server_rounds
    assert final == pytest.approx(
        oracle_epsilon(round_plan.dp.noise_multiplier, 16 / 200, total_steps, 1e-5), rel=1e-9
    )
    assert 0.99 * 2.0 <= final <= 2.0
    with pytest.raises(BudgetExhaustedError, match=r"> the run's `dp-epsilon` 2;"):
        hospital.admit(round_plan)  # a fifth round would go over the target


# --- the budget is enforced before training -----------------------------------------------


def test_over_max_epsilon_refuses_and_spends_nothing(tmp_path: Path) -> None:
    config, data = record_config(), split(200)
    round_plan = plan(config, len(data))
    one_round = oracle_epsilon(1.1, 16 / 200, local_steps(200, 16, 1), 1e-5)
    hospital = gate(tmp_path, data, max_epsilon=1.05 * one_round)
    hospital.admit(round_plan)
    hospital.record(round_plan)

    with pytest.raises(BudgetExhaustedError, match=r"> the hospital's `max-epsilon`"):
        hospital.admit(round_plan)

    assert gate(tmp_path, data).projected(round_plan) == pytest.approx(
        oracle_epsilon(1.1, 16 / 200, 2 * local_steps(200, 16, 1), 1e-5), rel=1e-9
    )  # the ledger still holds exactly one round


@pytest.mark.parametrize("mode", ["off", "hospital"])
def test_a_hospital_with_a_budget_sends_no_update_without_local_noise(
    tmp_path: Path, mode: str
) -> None:
    config = app_config(dp=mode, dp_epsilon=3.0)
    hospital = gate(tmp_path, split(), max_epsilon=50.0)

    with pytest.raises(BudgetExhaustedError, match=r"ε to inf"):
        hospital.admit(plan(config, 200))


def test_a_non_private_release_makes_later_epsilon_infinite(tmp_path: Path) -> None:
    data = split()
    hospital = gate(tmp_path, data)
    off = plan(app_config(), 200)
    hospital.admit(off)  # no budget: allowed

    assert hospital.record(off) == math.inf
    with pytest.raises(BudgetExhaustedError):
        hospital.admit(plan(record_config(), 200))


def test_changing_delta_or_noise_does_not_reset_the_ledger(tmp_path: Path) -> None:
    data = split()
    hospital = gate(tmp_path, data)
    first = plan(record_config(), 200)
    hospital.record(first)

    other = plan(record_config(dp_delta=1e-6, dp_noise_multiplier=2.0), 200)
    after = hospital.record(other)

    steps = local_steps(200, 16, 1)
    accountant = rdp.RdpAccountant()
    for noise in (1.1, 2.0):
        event = dp_event.PoissonSampledDpEvent(16 / 200, dp_event.GaussianDpEvent(noise))
        accountant.compose(dp_event.SelfComposedDpEvent(event, steps))
    assert after == pytest.approx(accountant.get_epsilon(1e-6), rel=1e-9)


def test_other_data_have_their_own_entry(tmp_path: Path) -> None:
    config = record_config()
    gate(tmp_path, split(seed=0)).record(plan(config, 200))

    fresh = gate(tmp_path, split(seed=1))

    assert fresh.projected(plan(config, 200)) == pytest.approx(
        oracle_epsilon(1.1, 16 / 200, local_steps(200, 16, 1), 1e-5), rel=1e-9
    )
    document = json.loads((tmp_path / "ledger.json").read_text())
    assert set(document["entries"]) == {data_fingerprint(split(seed=0))}


# --- where the ledger lives ---------------------------------------------------------------


def test_an_unreadable_ledger_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text("{not json")

    with pytest.raises(LedgerError, match=r"^Cannot read the privacy ledger .*ledger.json"):
        gate(tmp_path, split()).admit(plan(record_config(), 200))

    assert path.read_text() == "{not json"


def test_state_store_keeps_the_ledger_within_a_run() -> None:
    state = RecordDict()
    data, config = split(), record_config()
    first = PrivacyGate(HospitalBudget(None, StateStore(state)), data)
    first.record(plan(config, 200))

    again = PrivacyGate(HospitalBudget(None, StateStore(state)), data)

    assert again.projected(plan(config, 200)) == pytest.approx(
        oracle_epsilon(1.1, 16 / 200, 2 * local_steps(200, 16, 1), 1e-5), rel=1e-9
    )


def deployed(tmp_path: Path, **extra: Any) -> UserConfig:
    return {"data-path": str(tmp_path / "site.npz"), "site-name": "st-olav", **extra}


def test_a_deployed_budget_comes_from_the_node_config_only(tmp_path: Path) -> None:
    config = record_config(max_epsilon=100.0)  # the run config's value is for simulations

    budget = hospital_budget(deployed(tmp_path, **{"max-epsilon": 2.5}), config, RecordDict(), "x")
    default = hospital_budget(deployed(tmp_path), config, RecordDict(), "x")

    assert budget.max_epsilon == 2.5
    assert default.max_epsilon is None
    assert isinstance(default.store, FileStore)
    assert default.store.path == tmp_path / "site.npz.privacy-ledger.json"


def test_a_deployed_ledger_path_can_be_chosen(tmp_path: Path) -> None:
    node = deployed(tmp_path, **{"privacy-ledger": str(tmp_path / "dpo" / "l.json")})

    budget = hospital_budget(node, record_config(), RecordDict(), "x")

    assert isinstance(budget.store, FileStore)
    assert budget.store.path == tmp_path / "dpo" / "l.json"


def test_simulated_hospitals_share_the_run_budget(tmp_path: Path) -> None:
    config = record_config(max_epsilon=4.0, run_dir=str(tmp_path))
    node: UserConfig = {"partition-id": 2, "num-partitions": 3}

    budget = hospital_budget(node, config, RecordDict(), "hospital-2")
    in_state = hospital_budget(node, record_config(), RecordDict(), "hospital-2")

    assert budget.max_epsilon == 4.0
    assert isinstance(budget.store, FileStore)
    assert budget.store.path == tmp_path / "privacy-ledgers" / "hospital-2.json"
    assert in_state.max_epsilon is None
    assert isinstance(in_state.store, StateStore)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            0.0,
            "Invalid value for `max-epsilon`. Expected a number > 0 in the SuperNode's `--node-config`. Received: 0.0",
        ),
        (
            "3",
            "Invalid value for `max-epsilon`. Expected a number > 0 in the SuperNode's `--node-config`. Received: '3'",
        ),
    ],
)
def test_an_invalid_node_budget_is_one_line(tmp_path: Path, value: object, message: str) -> None:
    node = deployed(tmp_path, **{"max-epsilon": value})

    with pytest.raises(ConfigError) as raised:
        hospital_budget(node, record_config(), RecordDict(), "x")

    assert str(raised.value) == message


# --- what a hospital accepts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "extra", "message"),
    [
        ("record", {}, None),
        ("off", {}, None),
        ("hospital", {"clipping_norm": 1.0}, None),
        (
            "record",
            {"max-epsilon": 1000.0},
            "Unexpected setting `max-epsilon` in the train request. Expected only `local-epochs`, `batch-size`, `learning-rate`, `proximal-mu`, `local-steps`, `local-optimizer`, `local-momentum`, `augment`, `augment-shift`, `augment-rotation`, `augment-intensity`, `augment-contrast`, `server-round`.",
        ),
        (
            "record",
            {"dp-noise-multiplier": 0.01},
            "Unexpected setting `dp-noise-multiplier` in the train request. Expected only `local-epochs`, `batch-size`, `learning-rate`, `proximal-mu`, `local-steps`, `local-optimizer`, `local-momentum`, `augment`, `augment-shift`, `augment-rotation`, `augment-intensity`, `augment-contrast`, `server-round`.",
        ),
        (
            "record",
            {"clipping_norm": 1.0},
            "Unexpected setting `clipping_norm` in the train request. Expected only `local-epochs`, `batch-size`, `learning-rate`, `proximal-mu`, `local-steps`, `local-optimizer`, `local-momentum`, `augment`, `augment-shift`, `augment-rotation`, `augment-intensity`, `augment-contrast`, `server-round`.",
        ),
        (
            "hospital",
            {"clipping_norm": 50.0},
            "Invalid value for `clipping_norm`. Expected the run's `dp-clip-norm` (1). Received: 50.0",
        ),
        (
            "hospital",
            {},
            "Invalid value for `clipping_norm`. Expected the run's `dp-clip-norm` (1). Received: None",
        ),
    ],
)
def test_only_accepted_settings_reach_the_hospital(
    mode: str, extra: dict[str, float], message: str | None
) -> None:
    request = ConfigRecord({**TRAIN, "server-round": 1, **extra})
    config = app_config(dp=mode, dp_epsilon=3.0)

    if message is None:
        check_train_request(request, config)
    else:
        with pytest.raises(ConfigError) as raised:
            check_train_request(request, config)
        assert str(raised.value) == message


def test_a_hospital_smaller_than_a_batch_samples_everyone() -> None:
    round_plan = plan(record_config(batch_size=16), 10)

    assert round_plan.batch_size == 10
    assert round_plan.dp is not None
    assert round_plan.dp.steps == 1  # one full-data step per epoch, sampling rate 1


def test_a_hospital_refuses_a_delta_its_data_cannot_honour() -> None:
    with pytest.raises(ConfigError) as raised:
        plan(record_config(dp_delta=0.005), 200)

    assert str(raised.value) == (
        "Invalid value for `dp-delta`. Expected a number < 1/200 = 0.005 at this hospital "
        "(δ ≥ 1/N allows publishing a patient's record outright). Received: 0.005"
    )
