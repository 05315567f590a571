"""The coordinator's view of one hospital: membership inference on its model update.

Without secure aggregation the coordinator sees each hospital's returned model. This
module lets simulated hospital ``hospital`` of a finished run train one more round on the
run's global model (``model.keras``) exactly as its ClientApp would: the train request the
coordinator sends (the global arrays, the run's :func:`server.loop.train_config_record`
with ``server-round`` = the last recorded round + 1, under hospital-level DP the run's
clipping norm) goes in-process through ``client.app.build_client_app(simulated_hospital)``
— the hospital's own handler and mods, record-level DP-SGD and Flower's clipping included.
Every candidate is then scored by how much that update lowered its loss:
``loss(global) − loss(returned)`` (higher = member).

The run directory is never modified: the ClientApp's ``run-dir`` is a temporary directory
holding a copy of the hospital's privacy ledger (``<run-dir>/privacy-ledgers/<name>.json``,
when the run kept one), so the reply's ``epsilon`` is its cumulative ε after this extra
round. The round is asked for at the run's own noise level even where the hospital's budget
would refuse another one (its noise multiplier is fixed to what the run used, the budget
limits are lifted in the throw-away copy): the audit measures what a round at that noise
leaks, and a refused round leaks nothing. A run with an empty ``run-dir`` kept its simulated
ledgers in memory only; its ``epsilon`` is then this round's alone.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from client.privacy import SIMULATED_LEDGERS as LEDGERS_DIR
from common.errors import FedclinicError, invalid_value
from server.run_dir import MODEL_FILE
from simulations.audit.mia_math import example_loss

if TYPE_CHECKING:
    from flwr.app import Message, UserConfig

    from common.config import AppConfig
    from simulations.audit.candidates import Candidates

AUDIT_RUN_ID = 0


@dataclass(frozen=True)
class UpdateAttack:
    """Scores of every candidate against one hospital's update.

    ``scores``: (N,) ``loss(global) − loss(returned)``, higher = member. ``round``: the
    round the update was trained as (the run's last round + 1). ``epsilon``: the
    hospital's cumulative ε after this round under record-level DP (the reply's metric),
    else None — under hospital-level DP the coordinator sees the clipped update before the
    noise, which no ε bounds. ``returned_auc``: test AUC of the returned model on the
    candidates' non-members (None when they do not hold every class needed for an AUC).
    """

    scores: np.ndarray
    hospital: int
    round: int
    epsilon: float | None
    returned_auc: float | None


def update_scores(
    run_dir: Path, candidates: Candidates, hospital: int, *, seed: int = 0
) -> UpdateAttack:
    """Let partition ``hospital`` train one round on ``run_dir``'s global model through its
    own ClientApp and score every candidate by its loss drop. ``seed`` seeds Keras's
    global random state for the round (dropout); DP-SGD's sampling and noise always come
    from OS entropy, as in the hospital."""
    from common.quiet import import_keras
    from simulations.audit.candidates import read_run

    num_hospitals = len(candidates.hospital_names)
    if not 0 <= hospital < num_hospitals:
        expected = f"a partition id from 0 to {num_hospitals - 1} (the run's hospitals)"
        raise FedclinicError(invalid_value("hospital", expected, hospital))
    run = read_run(run_dir)  # config.json onto the defaults (older runs lack keys), rounds
    run_config, config = run.values, run.config
    server_round = _last_round(run.rounds) + 1
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    global_weights = _global_weights(run_dir / MODEL_FILE)
    name = candidates.hospital_names[hospital]
    with tempfile.TemporaryDirectory(prefix="fedclinic-audit-") as scratch:
        ledger = run_dir / LEDGERS_DIR / f"{name}.json"
        if ledger.is_file():
            (Path(scratch) / LEDGERS_DIR).mkdir()
            shutil.copyfile(ledger, Path(scratch) / LEDGERS_DIR / ledger.name)
        audit_config = _audit_run_config(run_config, config, scratch, hospital, num_hospitals)
        reply = _train_round(
            audit_config, config, global_weights, server_round, hospital, num_hospitals
        )
    returned, epsilon = _returned(reply, config, name)
    global_probs = _probabilities(config, global_weights, candidates.images)
    returned_probs = _probabilities(config, returned, candidates.images)
    labels = candidates.labels
    scores = example_loss(global_probs, labels) - example_loss(returned_probs, labels)
    return UpdateAttack(
        scores=np.asarray(scores, dtype=np.float64),
        hospital=hospital,
        round=server_round,
        epsilon=epsilon,
        returned_auc=_non_member_auc(returned_probs, candidates),
    )


def _last_round(rounds: list[dict[str, Any]]) -> int:
    """The last round ``metrics.json`` records (0 when it records none)."""
    numbers = [r.get("round") for r in rounds if isinstance(r, dict)]
    return max((n for n in numbers if isinstance(n, int)), default=0)


def _global_weights(path: Path) -> list[np.ndarray]:
    from common.quiet import import_keras

    if not path.is_file():
        raise FedclinicError(
            invalid_value("RUN_DIR", f"a run directory containing {path.name}", str(path.parent))
        )
    model = import_keras().saving.load_model(path, compile=False)
    return [np.asarray(w) for w in model.get_weights()]


def _audit_run_config(
    run_config: dict[str, Any], config: AppConfig, scratch: str, hospital: int, hospitals: int
) -> dict[str, Any]:
    """The run config with ``run-dir`` in ``scratch`` and no budget limit; under
    record-level DP the noise multiplier fixed to the one the run used."""
    values = {**run_config, "run-dir": scratch, "resume": False, "max-epsilon": 0.0}
    if config.privacy.dp == "record":
        values["dp-noise-multiplier"] = _run_noise(config, hospital, hospitals)
        values["dp-epsilon"] = math.inf
    return values


def _run_noise(config: AppConfig, hospital: int, hospitals: int) -> float:
    """σ of the hospital's DP-SGD in the run (calibrated for its size, as it did)."""
    from client.cache import PROCESS_CACHE
    from client.privacy import plan_round
    from client.site import resolve_site
    from simulations.hospitals import simulated_hospital

    node_config: UserConfig = {"partition-id": hospital, "num-partitions": hospitals}
    site = resolve_site(node_config, config, PROCESS_CACHE, simulated_hospital)
    plan = plan_round(config, config.train, len(site.train), PROCESS_CACHE.calibrated_noise)
    if plan.dp is None:  # not reached: the caller checked dp == "record"
        raise FedclinicError("record-level DP planned no DP-SGD round")
    return plan.dp.noise_multiplier


def _train_round(
    audit_config: dict[str, Any],
    config: AppConfig,
    weights: list[np.ndarray],
    server_round: int,
    hospital: int,
    hospitals: int,
) -> Message:
    """The coordinator's train request, answered by the hospital's own ClientApp."""
    from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict
    from flwr.app.constants import DEFAULT_TTL
    from flwr.app.metadata import Metadata
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    from client.app import build_client_app
    from client.privacy import SERVER_ROUND
    from common.contract import ARRAYS_KEY, CONFIG_KEY
    from server.loop import train_config_record
    from simulations.hospitals import simulated_hospital

    request = train_config_record(config)
    request[SERVER_ROUND] = server_round
    if config.privacy.dp == "hospital":  # what Flower's DP wrapper adds for fixedclipping_mod
        request[KEY_CLIPPING_NORM] = config.privacy.dp_clip_norm
    content = RecordDict({ARRAYS_KEY: ArrayRecord(weights), CONFIG_KEY: request})
    node_id = hospital + 1
    metadata = Metadata(
        run_id=AUDIT_RUN_ID,
        message_id=f"audit-{hospital}-{server_round}",
        src_node_id=0,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id=str(server_round),
        created_at=time.time(),
        ttl=DEFAULT_TTL,  # what Flower gives a request; the audit's round has no deadline
        message_type=MessageType.TRAIN,
    )
    context = Context(
        run_id=AUDIT_RUN_ID,
        node_id=node_id,
        node_config={"partition-id": hospital, "num-partitions": hospitals},
        state=RecordDict(),
        run_config=audit_config,
    )
    # A request with explicit metadata: the public constructor stamps the sender from
    # Flower's TaskIdentity, which only a running ServerApp or ClientApp process has.
    message = Message(content=content, metadata=metadata)  # type: ignore[call-overload]
    return build_client_app(simulated_hospital)(message, context)


def _returned(
    reply: Message, config: AppConfig, name: str
) -> tuple[list[np.ndarray], float | None]:
    from common.contract import ARRAYS_KEY, EPSILON_KEY, METRICS_KEY

    if reply.has_error():
        raise FedclinicError(
            f"{name} did not train the audit's round: {reply.error.reason} "
            "(the hospital's log above has the details)."
        )
    weights = reply.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    if config.privacy.dp != "record":
        return weights, None
    value = reply.content.metric_records[METRICS_KEY][EPSILON_KEY]
    return weights, float(value) if isinstance(value, int | float) else None


def _probabilities(config: AppConfig, weights: list[np.ndarray], images: np.ndarray) -> np.ndarray:
    """Predicted class probabilities of ``weights`` (the run's model) on ``images``."""
    from client.cache import PROCESS_CACHE

    trainer = PROCESS_CACHE.trainer(config.model, config.data.spec())
    try:
        trainer.model.set_weights(weights)
    except ValueError as error:
        raise FedclinicError(
            f"The weights do not fit the run's `model` ({config.model}): {error}"
        ) from None
    return trainer.predict(np.asarray(images, dtype=np.float32)).astype(np.float64)


def _non_member_auc(probabilities: np.ndarray, candidates: Candidates) -> float | None:
    """Test AUC of the returned model on the non-members; None when their labels do not
    have the classes an AUC needs (binary: both; more: at least one class vs the rest)."""
    from common.metrics import auc

    outside = ~np.asarray(candidates.is_member, dtype=bool)
    if not outside.any():
        return None
    value = auc(candidates.labels[outside], probabilities[outside])
    return None if math.isnan(value) else float(value)
