"""``deployment.perimeter``: the nginx config that exposes only the Fleet API."""

from __future__ import annotations

import re
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cli.main import main
from common.errors import ConfigError
from deployment.perimeter import (
    Address,
    NginxSite,
    nginx_binary,
    nginx_config,
    nginx_site,
    parse_address,
    write_nginx_config,
)
from deployment.pki import PkiPaths, init_pki
from deployment.processes import DeployError


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    return init_pki(
        tmp_path_factory.mktemp("pki"), hosts=("superlink.example.org", "localhost", "127.0.0.1")
    )


@pytest.fixture(scope="module")
def site(pki: PkiPaths) -> NginxSite:
    return nginx_site(pki.root, "0.0.0.0:9093", "127.0.0.1:9091")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:9093", Address("0.0.0.0", 9093)),
        ("coordinator.example.org:443", Address("coordinator.example.org", 443)),
        ("[::1]:9091", Address("::1", 9091)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text, "--listen") == expected


@pytest.mark.parametrize(
    "text", ["9093", "host:", ":9093", "host:0", "host:65536", "a b:1", "::1:9"]
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_address(text, "--listen")
    assert str(caught.value) == (
        f"Invalid value for `--listen`. Expected HOST:PORT with a port in 1..65535. "
        f"Received: {text!r}"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"superlink": "10.0.0.5:9091"},
            "Invalid value for `--superlink`. Expected a loopback HOST:PORT (e.g. "
            "127.0.0.1:9091). Received: '10.0.0.5:9091'",
        ),
        (
            {"workers": "0"},
            "Invalid value for `--workers`. Expected `auto` or an integer ≥ 1. Received: '0'",
        ),
        (
            {"max_body": "lots"},
            "Invalid value for `--max-body-size`. Expected a size such as 256m. Received: 'lots'",
        ),
        (
            {"user": "www data"},
            "Invalid value for `--user`. Expected a user name. Received: 'www data'",
        ),
        (
            {"listen": "0.0.0.0"},
            "Invalid value for `--listen`. Expected HOST:PORT with a port in 1..65535. "
            "Received: '0.0.0.0'",
        ),
    ],
)
def test_nginx_site_refuses(pki: PkiPaths, overrides: dict[str, str], message: str) -> None:
    arguments = {"listen": "0.0.0.0:9093", "superlink": "127.0.0.1:9091", **overrides}
    with pytest.raises(ConfigError) as caught:
        nginx_site(pki.root, **arguments)
    assert str(caught.value) == message


def test_nginx_site_needs_the_pki(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        nginx_site(tmp_path, "0.0.0.0:9093", "127.0.0.1:9091")
    assert str(caught.value) == (
        f"Missing {tmp_path.resolve() / 'ca.crt'}. Create the PKI first: fedclinic pki init DIR."
    )


@pytest.mark.parametrize(
    ("hosts", "superlink", "fragment"),
    [
        (("superlink.example.org",), "127.0.0.1:9091", "does not name 127.0.0.1"),
        (("127.0.0.1",), "127.0.0.1:9091", "names no DNS host"),
    ],
)
def test_nginx_site_checks_the_certificate(
    tmp_path: Path, hosts: tuple[str, ...], superlink: str, fragment: str
) -> None:
    paths = init_pki(tmp_path, hosts=hosts)
    with pytest.raises(ConfigError, match=fragment):
        nginx_site(paths.root, "0.0.0.0:9093", superlink)


@pytest.mark.parametrize(
    ("hosts", "upstream_name"),
    [
        (("superlink.example.org", "localhost", "127.0.0.1"), "localhost"),
        (("superlink.example.org", "127.0.0.1"), "superlink.example.org"),
    ],
)
def test_upstream_name_is_a_dns_name_of_the_certificate(
    tmp_path: Path, hosts: tuple[str, ...], upstream_name: str
) -> None:
    paths = init_pki(tmp_path, hosts=hosts)
    assert nginx_site(paths.root, "0.0.0.0:9093", "127.0.0.1:9091").upstream_name == upstream_name


def test_config_terminates_tls_and_verifies_the_superlink(site: NginxSite, pki: PkiPaths) -> None:
    text = nginx_config(site)
    for directive in (
        "listen 0.0.0.0:9093 ssl;",
        f"ssl_certificate {pki.server_cert};",
        f"ssl_certificate_key {pki.server_key};",
        "server 127.0.0.1:9091;",
        "proxy_pass https://fedclinic_superlink;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_ssl_verify on;",
        f"proxy_ssl_trusted_certificate {pki.ca_cert};",
        "proxy_ssl_name localhost;",
        "client_max_body_size 256m;",
        "daemon off;",
        "pid nginx.pid;",
        "access_log access.log fedclinic;",
        "worker_processes auto;",
    ):
        assert f"\n{' ' * _indent(text, directive)}{directive}\n" in text, directive
    assert "user " not in text
    assert nginx_config(replace(site, user="www-data")).startswith("# fedclinic perimeter")
    assert "\nuser www-data;\n" in nginx_config(replace(site, user="www-data"))


# path -> what nginx does with a POST: "forward" to the SuperLink, or its own status
ROUTES = (
    ("/v1/fleet/pull-messages", "forward"),
    ("/v1/fleet/push-object", "forward"),
    ("/v1/fleet/send-node-heartbeat", "forward"),
    ("/v1/fleet/register-node", 403),
    ("/v1/fleet/unregister-node", 403),
    ("/v1/fleet/", 404),
    ("/v1/fleet/pull-messages/x", 404),
    ("/v1/fleet/Pull", 404),
    ("/v1/fleetx/pull-messages", 404),
    ("/v1/control/start-run", 404),
    ("/v1/control/register-node", 404),
    ("/v1/runtime/acquire-task", 404),
    ("/docs", 404),
    ("/openapi.json", 404),
    ("/health", 404),
    ("/", 404),
)


@pytest.mark.parametrize(("path", "outcome"), ROUTES)
def test_locations_forward_only_the_fleet_api(site: NginxSite, path: str, outcome: object) -> None:
    assert _route(nginx_config(site), path) == outcome


def test_write_refuses_to_overwrite(tmp_path: Path, site: NginxSite) -> None:
    out = tmp_path / "nginx.conf"
    write_nginx_config(out, site)
    assert (out.read_text(), stat.S_IMODE(out.stat().st_mode)) == (nginx_config(site), 0o644)
    with pytest.raises(ConfigError) as caught:
        write_nginx_config(out, replace(site, workers="2"))
    assert str(caught.value) == f"Refusing to overwrite {out}. Pass --force to replace it."
    write_nginx_config(out, replace(site, workers="2"), force=True)
    assert "worker_processes 2;" in out.read_text()


def test_nginx_accepts_the_config(tmp_path: Path, site: NginxSite) -> None:
    try:
        nginx = nginx_binary()
    except DeployError as error:
        pytest.skip(str(error))
    config = write_nginx_config(
        tmp_path / "nginx.conf", replace(site, listen=Address("127.0.0.1", 1))
    )
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    done = subprocess.run(
        [nginx, "-t", "-c", str(config), "-p", f"{prefix}/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_cli_writes_the_config(tmp_path: Path, pki: PkiPaths, site: NginxSite) -> None:
    out = tmp_path / "perimeter.conf"
    argv = ["perimeter", "nginx", str(pki.root), "--listen", "0.0.0.0:9093"]
    argv += ["--superlink", "127.0.0.1:9091", "--out", str(out)]
    assert main(argv) == 0
    assert out.read_text() == nginx_config(site)


def test_cli_failure_is_one_line(
    tmp_path: Path, pki: PkiPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["perimeter", "nginx", str(pki.root), "--listen", "0.0.0.0:9093"]
    argv += ["--superlink", "192.168.1.2:9091", "--out", str(tmp_path / "x.conf")]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "error: Invalid value for `--superlink`. Expected a loopback HOST:PORT "
        "(e.g. 127.0.0.1:9091). Received: '192.168.1.2:9091'\n"
    )
    assert not (tmp_path / "x.conf").exists()


def _indent(text: str, directive: str) -> int:
    line = next((line for line in text.splitlines() if line.strip() == directive), "")
    return len(line) - len(line.lstrip())


def _route(text: str, path: str) -> str | int:
    """What the config does with ``path``: nginx tries the regex locations in order, then
    falls back to ``location /``; a block either forwards or returns a status."""
    regexes = re.findall(r"location ~ (\S+) \{(.*?)\n        \}", text, flags=re.DOTALL)
    fallback = re.findall(r"location / \{(.*?)\n        \}", text, flags=re.DOTALL)
    block = next((body for pattern, body in regexes if re.search(pattern, path)), fallback[0])
    status = re.search(r"return (\d{3});", block)
    return "forward" if "proxy_pass" in block else int(status[1]) if status else 0
