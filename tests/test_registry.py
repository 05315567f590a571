"""Named sites: the coordinator's registry names nodes by their keys; other names are flagged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo

from client.keys import generate_site_key
from common.errors import ConfigError
from common.site_keys import parse_public_key
from deployment.pki import add_site, init_pki
from server.loop import run_round
from server.records import SiteBook, names_of
from server.registry import SiteRegistry, registered_names
from server.report import write_report
from server.strategies import build_strategy
from server.validation import ValidatingStrategy
from tests.factories import app_config, run_config
from tests.fake_grid import Behaviour, FakeGrid


def _key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP384R1()).public_key()


def _pem(key: Any) -> bytes:
    """As Flower 1.42's SuperLink stores a registered key (`public_key_to_bytes`)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


ST_MARYS, CITY, OUTSIDER = _key(), _key(), _key()
SITES = {"st-marys": ST_MARYS, "city-general": CITY}


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ([], {}),
        ([(11, _pem(ST_MARYS)), (12, _pem(CITY))], {11: "st-marys", 12: "city-general"}),
        # a key the PKI never recorded (an outsider's registration): left out
        ([(11, _pem(ST_MARYS)), (13, _pem(OUTSIDER))], {11: "st-marys"}),
        # no key at all (a simulation, or insecure SuperNodes)
        ([(14, b"")], {}),
        ([(15, b"not a key")], {}),
        ([(16, _pem(rsa.generate_private_key(65537, 2048).public_key()))], {}),
        # the same key in DER or OpenSSH form is the same key
        (
            [
                (17, ST_MARYS.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )),
                (18, CITY.public_bytes(
                    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
                )),
            ],
            {17: "st-marys", 18: "city-general"},
        ),
    ],
)  # fmt: skip
def test_registered_names_join_node_keys_with_the_pki(
    nodes: list[tuple[int, bytes]], expected: dict[int, str]
) -> None:
    assert registered_names(nodes, SITES) == expected


def test_registry_loads_the_sites_add_site_recorded(tmp_path: Path) -> None:
    # Prepare
    root = init_pki(tmp_path / "pki").root
    made = generate_site_key(tmp_path / "hospital", "st-marys")
    add_site(root, "st-marys", public_key=made.public_key)
    node_key = parse_public_key(made.public_key.read_bytes(), "key", "test")

    # Execute
    registry = SiteRegistry.load(str(root / "sites.json"))

    # Assert
    assert SiteRegistry.load("") is None
    assert registry is not None
    assert registered_names([(5, _pem(node_key))], registry.sites) == {5: "st-marys"}


@pytest.mark.parametrize(
    "content",
    [None, "not json", '{"nodes": {}}', '{"sites": []}'],
)
def test_an_unreadable_registry_is_one_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "sites.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError) as error:
        SiteRegistry.load(str(path))

    assert str(error.value) == (
        "Invalid value for `site-registry`. Expected a sites.json written by "
        f"`fedclinic pki add-site`. Received: '{path}'"
    )


def test_a_registry_with_a_bad_key_names_the_site(tmp_path: Path) -> None:
    path = tmp_path / "sites.json"
    path.write_text(json.dumps({"sites": {"st-marys": "ssh-rsa AAAA"}}))

    with pytest.raises(ConfigError) as error:
        SiteRegistry.load(str(path))

    assert str(error.value).startswith("Invalid value for `site-registry`. Expected one OpenSSH")
    assert str(error.value).endswith(
        f"Received: '{path}: site st-marys (not an OpenSSH public key)'"
    )


def _reported(book: SiteBook, node: int, name: str) -> None:
    book.learn(node, {"site-name": name, "data-kind": "folder"})


def test_site_book_without_a_registry_is_unchanged() -> None:
    book = SiteBook()
    _reported(book, 1, "st-marys")

    assert book.describe(1) == {"name": "st-marys", "data-kind": "folder"}
    assert book.new_warnings([1, 2]) == []


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        # registered, reported the same name
        ({1: "st-marys"}, {"name": "st-marys", "data-kind": "folder", "registered": True}),
        # registered, never replied: the registry still names it
        ({}, {"name": "st-marys", "registered": True}),
        # registered, reported another name: the registry wins, the reply is flagged
        ({1: "city-general"},
         {"name": "st-marys", "data-kind": "folder", "registered": True,
          "name-mismatch": "city-general"}),
    ],
)  # fmt: skip
def test_site_book_names_registered_nodes_from_the_registry(
    reported: dict[int, str], expected: dict[str, Any]
) -> None:
    book = SiteBook()
    book.learn_registered({1: "st-marys"})
    for node, name in reported.items():
        _reported(book, node, name)

    assert book.describe(1) == expected


def test_an_unregistered_node_keeps_its_reported_name_and_is_flagged() -> None:
    book = SiteBook(registered={})
    _reported(book, 3, "st-marys")

    assert book.describe(3) == {"name": "st-marys", "data-kind": "folder", "registered": False}
    assert book.describe(4) == {"name": "node-4", "registered": False}


def test_each_flag_is_logged_once_per_run() -> None:
    # Prepare
    book = SiteBook()
    book.learn_registered({1: "st-marys", 2: "city-general"})
    _reported(book, 1, "st-marys")
    _reported(book, 2, "st-marys")
    _reported(book, 3, "intruder")

    # Execute
    first = book.new_warnings([1, 2, 3])
    again = book.new_warnings([1, 2, 3])
    _reported(book, 2, "other")
    changed = book.new_warnings([2])

    # Assert
    assert first == [
        "[fedclinic] node 2 is registered as `city-general` but reported the name `st-marys`",
        "[fedclinic] node 3 (intruder) is not in the site registry",
    ]
    assert again == []
    assert changed == [
        "[fedclinic] node 2 is registered as `city-general` but reported the name `other`"
    ]


def test_a_resumed_run_remembers_registered_and_reported_names() -> None:
    # Prepare: round 1 as the registry-aware loop recorded it
    history = [
        {
            "nodes": {
                "train": {
                    "1": {"name": "st-marys", "data-kind": "folder", "registered": True,
                          "name-mismatch": "city-general", "status": "ok"},
                    "2": {"name": "node-2", "registered": True, "status": "timeout"},
                },
                "evaluate": {},
            }
        }
    ]  # fmt: skip
    history[0]["nodes"]["train"]["2"]["name"] = "general"
    book = SiteBook(registered={})

    # Execute
    book.learn_rounds(history)

    # Assert
    assert book.describe(1)["name-mismatch"] == "city-general"
    assert (book.name(1), book.name(2)) == ("st-marys", "general")
    assert names_of(history) == {"1": "st-marys", "2": "general"}


class RegisteredGrid(FakeGrid):
    """A FakeGrid whose nodes carry public keys, as the SuperLink's Runtime API reports them."""

    def __init__(self, behaviours: dict[int, Behaviour], keys: dict[int, bytes]) -> None:
        super().__init__(behaviours)
        self.keys = keys

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=node, public_key=key) for node, key in self.keys.items()]


def _hospital(site_name: str) -> Behaviour:
    def behaviour(request: Message) -> Message:
        site = ConfigRecord({"site-name": site_name, "data-kind": "folder"})
        if request.metadata.message_type == "train":
            arrays = request.content.array_records["arrays"]
            metrics = MetricRecord({"num-examples": 10, "loss": 0.5, "accuracy": 0.75})
            content = RecordDict({"arrays": arrays, "metrics": metrics, "site": site})
        else:
            metrics = MetricRecord(
                {"num-examples": 5, "loss": 0.5, "accuracy": 0.5, "auc": 0.5,
                 "sensitivity": 0.5, "specificity": 0.5}
            )  # fmt: skip
            content = RecordDict({"metrics": metrics, "site": site})
        return Message(content=content, reply_to=request)

    return behaviour


@pytest.mark.usefixtures("task_identity")
def test_the_round_loop_names_nodes_by_the_registry_and_flags_a_mismatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: node 2 claims to be st-marys; node 3's key was never recorded
    grid = RegisteredGrid(
        {1: _hospital("st-marys"), 2: _hospital("st-marys"), 3: _hospital("intruder")},
        {1: _pem(ST_MARYS), 2: _pem(CITY), 3: _pem(OUTSIDER)},
    )
    config = app_config(min_train_nodes=3, min_available_nodes=3, min_evaluate_nodes=3)
    strategy = ValidatingStrategy(build_strategy(config), 0.0, 3)
    arrays = ArrayRecord([np.zeros((2, 2), np.float32)])

    # Execute
    with caplog.at_level(logging.WARNING):
        record = run_round(
            grid, strategy, arrays, 1, config, book=SiteBook(), registry=SiteRegistry(SITES)
        ).record

    # Assert
    described = {
        node: {k: v for k, v in outcome.items() if k not in ("status", "metrics", "update-norm")}
        for node, outcome in record["nodes"]["train"].items()
    }
    assert described == {
        "1": {"name": "st-marys", "data-kind": "folder", "registered": True},
        "2": {"name": "city-general", "data-kind": "folder", "registered": True,
              "name-mismatch": "st-marys"},
        "3": {"name": "intruder", "data-kind": "folder", "registered": False},
    }  # fmt: skip
    assert record["nodes"]["evaluate"]["2"]["name-mismatch"] == "st-marys"
    warnings = [r.getMessage() for r in caplog.records if "site registry" in r.getMessage()
                or "registered as" in r.getMessage()]  # fmt: skip
    assert warnings == [
        "[fedclinic] node 2 is registered as `city-general` but reported the name `st-marys`",
        "[fedclinic] node 3 (intruder) is not in the site registry",
    ]


def _node(name: str, **flags: Any) -> dict[str, Any]:
    return {"name": name, "data-kind": "folder", "status": "ok",
            "metrics": {"num-examples": 10}, **flags}  # fmt: skip


def test_the_report_shows_the_registry_check(tmp_path: Path) -> None:
    # Prepare
    nodes = {
        "1": _node("st-marys", registered=True),
        "2": _node("city-general", registered=True, **{"name-mismatch": "st-marys"}),
        "3": _node("intruder", registered=False),
        "4": {"name": "north", "registered": True, "status": "timeout", "reason": "late"},
    }
    rounds = [
        {"round": 1, "train": {}, "evaluate": {}, "seconds": 1.0,
         "participation": {"sampled": 4, "ok": 3, "failed": 0, "timeout": 1, "rejected": 0},
         "nodes": {"train": nodes, "evaluate": {}}}
    ]  # fmt: skip
    (tmp_path / "metrics.json").write_text(
        json.dumps({"rounds": rounds, "outcome": {"status": "completed"}})
    )
    (tmp_path / "config.json").write_text(json.dumps(run_config(site_registry="/pki/sites.json")))

    # Execute
    text = write_report(tmp_path).read_text()

    # Assert
    start = text.index("| hospital |")
    table = text[start:].split("\n\n")[0].splitlines()
    assert table == [
        "| hospital | node id | data kind | training images | held-out images | rounds trained "
        "| registry check |",
        "|---|---|---|---|---|---|---|",
        "| city-general | `2` | folder | 10 | n/a | 1 | **name mismatch**: reported `st-marys` |",
        "| intruder | `3` | folder | 10 | n/a | 1 | **not in the site registry** |",
        "| north | `4` | not reported | n/a | n/a | 0 | ok |",
        "| st-marys | `1` | folder | 10 | n/a | 1 | ok |",
    ]


def test_site_registry_must_be_an_absolute_path() -> None:
    with pytest.raises(ConfigError) as error:
        app_config(site_registry="pki/sites.json")

    assert str(error.value) == (
        "Invalid value for `site-registry`. Expected an absolute path to the PKI's "
        "sites.json, or \"\" (off). Received: 'pki/sites.json'"
    )
