"""Choosing the Ray cluster and the resources per hospital (simulations/cluster.py), the
`python -m simulations` flags for them, and the docs/scaling.md commands the e2e test runs."""

from __future__ import annotations

import shlex

import pytest

from common.errors import ConfigError
from simulations.__main__ import main as simulations_main
from simulations.__main__ import parse_args
from simulations.cluster import backend_config, cluster_address
from tests.test_e2e_ray_cluster import doc_command

HEAD = "10.0.0.1:6379"
EXPECTED_ADDRESS = (
    "HOST:PORT of a running Ray cluster's head (`ray start --head --port PORT`), `auto` or `local`"
)


@pytest.mark.parametrize(
    ("flag", "environ", "expected"),
    [
        (None, {}, "local"),
        (None, {"RAY_ADDRESS": ""}, "local"),
        (None, {"RAY_ADDRESS": HEAD}, HEAD),
        ("127.0.0.1:40000", {"RAY_ADDRESS": HEAD}, "127.0.0.1:40000"),
        ("local", {"RAY_ADDRESS": HEAD}, "local"),
        ("auto", {}, "auto"),
        ("head-1.hospital.example:6379", {}, "head-1.hospital.example:6379"),
        ("[fd00::1]:6379", {}, "[fd00::1]:6379"),
        (None, {"RAY_ADDRESS": "127.0.0.1:65535"}, "127.0.0.1:65535"),
    ],
)
def test_cluster_address_prefers_the_flag_then_ray_address_then_local(
    flag: str | None, environ: dict[str, str], expected: str
) -> None:
    # Execute
    address = cluster_address(flag, environ)

    # Assert
    assert address == expected


@pytest.mark.parametrize(
    ("flag", "environ", "source", "received"),
    [
        ("", {}, "--ray-address", ""),
        ("10.0.0.1", {}, "--ray-address", "10.0.0.1"),
        ("10.0.0.1:0", {}, "--ray-address", "10.0.0.1:0"),
        ("10.0.0.1:65536", {}, "--ray-address", "10.0.0.1:65536"),
        ("ray://10.0.0.1:10001", {}, "--ray-address", "ray://10.0.0.1:10001"),
        ("10.0.0.1:6379 ", {}, "--ray-address", "10.0.0.1:6379 "),
        (None, {"RAY_ADDRESS": "head"}, "RAY_ADDRESS", "head"),
    ],
)
def test_cluster_address_refuses_what_is_not_host_port(
    flag: str | None, environ: dict[str, str], source: str, received: str
) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError) as caught:
        cluster_address(flag, environ)
    assert str(caught.value) == (
        f"Invalid value for `{source}`. Expected {EXPECTED_ADDRESS}. Received: {received!r}"
    )


@pytest.mark.parametrize(
    ("address", "cpus", "gpus"),
    [("local", 1.0, 0.0), (HEAD, 0.5, 0.0), (HEAD, 2.0, 1.0), (HEAD, 4, 0.25)],
)
def test_backend_config_passes_the_address_and_per_hospital_resources_only(
    address: str, cpus: float, gpus: float
) -> None:
    # Execute
    config = backend_config(address, cpus, gpus)

    # Assert: Ray refuses num_cpus/num_gpus in ray.init when it attaches to a cluster.
    assert config == {
        "client_resources": {"num_cpus": cpus, "num_gpus": gpus},
        "init_args": {"address": address},
    }


@pytest.mark.parametrize(
    ("cpus", "gpus", "key", "expected", "received"),
    [
        (0.0, 0.0, "--cpus-per-hospital", "> 0", "0.0"),
        (-1.0, 0.0, "--cpus-per-hospital", "> 0", "-1.0"),
        (1.5, 0.0, "--cpus-per-hospital", "> 0", "1.5"),
        (float("nan"), 0.0, "--cpus-per-hospital", "> 0", "nan"),
        (1.0, -0.5, "--gpus-per-hospital", "≥ 0", "-0.5"),
        (1.0, 2.5, "--gpus-per-hospital", "≥ 0", "2.5"),
    ],
)
def test_backend_config_refuses_resources_ray_would_refuse(
    cpus: float, gpus: float, key: str, expected: str, received: str
) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError) as caught:
        backend_config(HEAD, cpus, gpus)
    assert str(caught.value) == (
        f"Invalid value for `{key}`. Expected a number {expected}, whole when above 1. "
        f"Received: {received}"
    )


def test_a_bad_ray_address_stops_python_m_simulations_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Execute
    code = simulations_main(["--hospitals", "2", "--ray-address", "head"])

    # Assert
    assert code == 1
    assert capsys.readouterr().err == (
        f"error: Invalid value for `--ray-address`. Expected {EXPECTED_ADDRESS}. Received: 'head'\n"
    )


@pytest.mark.parametrize(
    "prefix", ["ray start --head", "ray start --block --address", "ray status", "python -m"]
)
def test_the_doc_has_each_command_the_e2e_test_runs_once(prefix: str) -> None:
    # Execute / Assert: doc_command raises unless exactly one line starts with `prefix`.
    assert doc_command(prefix).startswith(prefix)


def test_the_doc_simulation_command_parses_with_its_cluster_flag() -> None:
    # Prepare: the doc's variables as the e2e test sets them.
    words = shlex.split(doc_command("python -m simulations").replace("$HEAD_IP:$RAY_PORT", HEAD))

    # Execute
    args = parse_args(words[3:])

    # Assert
    assert (args.ray_address, args.hospitals, args.cpus_per_hospital) == (HEAD, 2, 1.0)
