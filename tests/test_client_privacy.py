"""What leaves a hospital: exactly the contract's reply, or an error that names only a kind.

Every test runs the production ClientApp from ``client.app.build_client_app`` (its real
handlers and mods); a tampering mod, which the factory places inside the privacy mods,
changes the real reply the way a faulty or malicious handler would.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
    UserConfig,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from PIL import Image

import client.site
import common.plugins
from client.app import build_client_app
from common.config import TrainConfig
from common.contract import reply_violations, site_of
from common.data.synthetic import synthetic_site
from common.errors import ConfigError, DataError
from common.models import build_model
from common.settings import kebab_keys
from simulations.hospitals import simulated_hospital
from tests.conftest import ROOT
from tests.factories import app_config, central_set, run_config

BLOCKED = "Reply blocked before leaving the site (details in the site log)"
SECRET = "/data/patients/jane-doe-0042"
SIMULATED: UserConfig = {"partition-id": 1, "num-partitions": 3}
SETTINGS = {"model": "cnn-small", "synthetic_examples": 60}
Tamper = Callable[[RecordDict, Message], None]


def request(message_type: str) -> Message:
    model = build_model("cnn-small", app_config().data.spec())
    train = {
        **{key: run_config()[key] for key in kebab_keys(TrainConfig)},
        "local-epochs": 1,
        "batch-size": 16,
        "learning-rate": 0.001,
        "proximal-mu": 0.0,
    }
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.get_weights()),
            "config": ConfigRecord(
                {**train, "server-round": 1}
                if message_type == MessageType.TRAIN
                else {"split": "test", "server-round": 1}
            ),
        }
    )
    return Message(content=content, dst_node_id=1, message_type=message_type)


def context(node_config: UserConfig) -> Context:
    values = run_config(**SETTINGS)
    return Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=values
    )


def inner_mod(change: Callable[[Message, Message], Message]) -> Mod:
    """A mod next to the handlers: gets the real reply and returns ``change(request, it)``."""

    def mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
        return change(msg, call_next(msg, ctx))

    return mod


def tampering_app(tamper: Tamper) -> ClientApp:
    def change(sent: Message, reply: Message) -> Message:
        tamper(reply.content, sent)
        return reply

    return build_client_app(simulated_hospital, mods=[inner_mod(change)])


def raising_app(error: Exception) -> ClientApp:
    def change(sent: Message, reply: Message) -> Message:
        raise error

    return build_client_app(simulated_hospital, mods=[inner_mod(change)])


# --- tampering with a real reply -------------------------------------------------------


def add_metric(content: RecordDict, sent: Message) -> None:
    content.metric_records["metrics"]["patient-age"] = 42


def drop_metric(content: RecordDict, sent: Message) -> None:
    del content.metric_records["metrics"]["accuracy"]


def list_metric(content: RecordDict, sent: Message) -> None:
    content.metric_records["metrics"]["loss"] = [0.1, 0.2]


def zero_examples(content: RecordDict, sent: Message) -> None:
    content.metric_records["metrics"]["num-examples"] = 0


def add_config_record(content: RecordDict, sent: Message) -> None:
    content["leak"] = ConfigRecord({"path": SECRET})


def add_metric_record(content: RecordDict, sent: Message) -> None:
    content["more"] = MetricRecord({"n": 1})


def add_array_record(content: RecordDict, sent: Message) -> None:
    content["extra"] = ArrayRecord([np.zeros(3, dtype=np.float32)])


def metrics_as_config(content: RecordDict, sent: Message) -> None:
    content["metrics"] = ConfigRecord(dict(content.metric_records["metrics"]))


def rename_array(content: RecordDict, sent: Message) -> None:
    arrays = content.array_records["arrays"]
    renamed = {("x-ray" if i == 0 else k): v for i, (k, v) in enumerate(arrays.items())}
    content["arrays"] = ArrayRecord(renamed)


def widen_dtype(content: RecordDict, sent: Message) -> None:
    arrays = content.array_records["arrays"]
    arrays["0"] = Array(arrays["0"].numpy().astype(np.float64))


def flatten_array(content: RecordDict, sent: Message) -> None:
    arrays = content.array_records["arrays"]
    arrays["0"] = Array(arrays["0"].numpy().reshape(-1))


def smuggle_site_string(content: RecordDict, sent: Message) -> None:
    content.config_records["site"]["note"] = SECRET


def path_as_site_name(content: RecordDict, sent: Message) -> None:
    content.config_records["site"]["site-name"] = SECRET


def unknown_data_kind(content: RecordDict, sent: Message) -> None:
    content.config_records["site"]["data-kind"] = "jane-doe-0042.png"


def drop_site(content: RecordDict, sent: Message) -> None:
    del content["site"]


def echo_arrays(content: RecordDict, sent: Message) -> None:
    content["arrays"] = sent.content.array_records["arrays"]


TRAIN, EVALUATE = MessageType.TRAIN, MessageType.EVALUATE


@pytest.mark.parametrize(
    ("message_type", "tamper", "logged"),
    [
        (TRAIN, add_metric, "record `metrics` keys: unexpected `patient-age`"),
        (TRAIN, drop_metric, "record `metrics` keys: missing `accuracy`"),
        (TRAIN, list_metric, "metric `loss` is not a scalar number"),
        (TRAIN, zero_examples, "metric `num-examples` is not a positive number"),
        (TRAIN, add_config_record, "records: unexpected `leak`"),
        (TRAIN, add_metric_record, "records: unexpected `more`"),
        (TRAIN, add_array_record, "records: unexpected `extra`"),
        (TRAIN, metrics_as_config, "record `metrics` is not a metric record"),
        (TRAIN, rename_array, "array names differ from the model's"),
        (TRAIN, widen_dtype, "array `0` is float64"),
        (TRAIN, flatten_array, "array `0` is float32[288], the model's is float32[3, 3, 1, 32]"),
        (TRAIN, smuggle_site_string, "record `site` keys: unexpected `note`"),
        (TRAIN, path_as_site_name, "`site.site-name` is not a site name"),
        (TRAIN, unknown_data_kind, "`site.data-kind` is not one of"),
        (TRAIN, drop_site, "records: missing `site`"),
        (EVALUATE, echo_arrays, "records: unexpected `arrays`"),
        (EVALUATE, add_metric, "record `metrics` keys: unexpected `patient-age`"),
        (EVALUATE, drop_metric, "record `metrics` keys: missing `accuracy`"),
        (EVALUATE, smuggle_site_string, "record `site` keys: unexpected `note`"),
        (EVALUATE, add_config_record, "records: unexpected `leak`"),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_mod_blocks_a_reply_outside_the_contract(
    message_type: str, tamper: Tamper, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = tampering_app(tamper)

    with caplog.at_level(logging.ERROR, logger="flwr"):
        reply = app(request(message_type), context(SIMULATED))

    assert reply.has_error()
    assert reply.error.reason == BLOCKED
    assert logged in caplog.text  # the details stay in the site's log


@pytest.mark.parametrize("message_type", [TRAIN, EVALUATE])
@pytest.mark.usefixtures("task_identity")
def test_untampered_simulated_reply_is_exactly_the_contract(message_type: str) -> None:
    sent = request(message_type)

    reply = build_client_app(simulated_hospital)(sent, context(SIMULATED))

    assert not reply.has_error(), reply.error
    content = reply.content
    assert reply_violations(message_type, content, sent.content.array_records["arrays"]) == []
    assert dict(site_of(content)) == {"site-name": "hospital-1", "data-kind": "simulated-synthetic"}
    expected = {"num-examples", "loss", "accuracy"}
    if message_type == EVALUATE:
        expected |= {"auc", "sensitivity", "specificity"}
    assert set(content.metric_records["metrics"]) == expected
    config = app_config(**SETTINGS)
    hospital = simulated_hospital(config.data, config.seed, 1, 3)
    size = len(hospital.train if message_type == TRAIN else hospital.test)
    assert content.metric_records["metrics"]["num-examples"] == size


def image_folder(root: Path) -> Path:
    site = synthetic_site(7, 3, 40, app_config().data.spec())
    for split_name, split in (("train", site.train), ("test", site.test)):
        for index, (image, label) in enumerate(zip(split.images, split.labels, strict=True)):
            folder = root / split_name / ("normal", "pneumonia")[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image[..., 0] * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{index}.png")
    return root


@pytest.mark.parametrize(
    ("make_data", "kind"),
    [
        (lambda tmp: central_set(tmp / "site.npz"), "medmnist"),
        (lambda tmp: image_folder(tmp / "images"), "folder"),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_deployed_site_reports_its_name_and_what_it_loaded(
    tmp_path: Path, make_data: Callable[[Path], Path], kind: str
) -> None:
    node_config: UserConfig = {
        "data-path": str(make_data(tmp_path)),
        "site-name": "st-mary",
    }
    sent = request(TRAIN)

    reply = build_client_app()(sent, context(node_config))

    assert not reply.has_error(), reply.error
    assert reply_violations(TRAIN, reply.content, sent.content.array_records["arrays"]) == []
    assert dict(site_of(reply.content)) == {"site-name": "st-mary", "data-kind": kind}


# --- errors carry only a kind ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConfigError(f"Invalid value for `data-path`. Received: {SECRET!r}"), "ConfigError"),
        (DataError(SECRET, [f"`{SECRET}/x.png`: unreadable"]), "DataError"),
        (
            FileNotFoundError(2, "No such file or directory", SECRET),
            "FileNotFoundError in the ClientApp",
        ),
        (KeyError(SECRET), "KeyError in the ClientApp"),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_an_exception_reaches_the_server_as_its_kind_only(error: Exception, reason: str) -> None:
    reply = raising_app(error)(request(TRAIN), context(SIMULATED))

    assert reply.has_error()
    assert reply.error.reason == f"{reason} (details in the site log)"


@pytest.mark.parametrize(
    ("node_config", "reason"),
    [
        ({"data-path": SECRET, "site-name": "st-mary"}, "DataError"),
        ({"data-path": "/data/site.npz", "site-name": SECRET}, "ConfigError"),
        ({"data-path": SECRET}, "ConfigError"),
        ({"secret": SECRET}, "ConfigError"),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_a_real_failure_never_sends_the_path(node_config: UserConfig, reason: str) -> None:
    reply = build_client_app()(request(EVALUATE), context(node_config))

    assert reply.has_error()
    assert reply.error.reason == f"{reason} (details in the site log)"


@pytest.mark.usefixtures("task_identity")
def test_an_error_reply_from_inside_loses_its_reason() -> None:
    def fail(sent: Message, reply: Message) -> Message:
        return Message(Error(code=0, reason=f"could not read {SECRET}"), reply_to=sent)

    app = build_client_app(simulated_hospital, mods=[inner_mod(fail)])

    reply = app(request(EVALUATE), context(SIMULATED))

    assert reply.has_error()
    assert reply.error.reason == "Error reply from the ClientApp (details in the site log)"


# --- layering: the hospital side never imports the simulator -------------------------------


def test_importing_the_client_app_imports_no_simulations_module() -> None:
    code = "import client.app, sys; print([m for m in sys.modules if m.startswith('simulations')])"

    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert completed.stdout.strip() == "[]"


def test_the_installed_entry_point_is_the_simulated_hospitals() -> None:
    assert client.site.registered_simulated_sites() is simulated_hospital


@pytest.mark.usefixtures("task_identity")
def test_manifest_app_finds_simulated_hospitals_through_the_entry_point() -> None:
    reply = build_client_app()(request(EVALUATE), context(SIMULATED))

    assert not reply.has_error(), reply.error
    assert dict(site_of(reply.content)) == {
        "site-name": "hospital-1",
        "data-kind": "simulated-synthetic",
    }


def test_no_registered_simulator_is_one_config_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.plugins, "entry_points", lambda **_: ())

    with pytest.raises(ConfigError) as raised:
        client.site.resolve_site(SIMULATED, app_config(), client.site.ProcessCache())

    assert str(raised.value) == (
        "No simulated hospitals are installed here (entry point `simulated` in "
        "`fedclinic.site_resolvers`); a hospital needs `data-path` and `site-name` in its "
        "node config."
    )
