"""The federation's perimeter: nginx in front of a SuperLink that listens on loopback only.

Flower 1.42's SuperLink serves the Fleet API (``/v1/fleet/``, SuperNodes), the Control API
(``/v1/control/``, the ``flwr`` CLI, no authentication in open-source Flower), the Runtime
API (``/v1/runtime/``, its own ServerApp) and ``/docs``, ``/openapi.json``, ``/health`` on
one HTTPS port (FastAPI under uvicorn: HTTP/1.1, server-side TLS only). nginx terminates
TLS for the hospitals with the federation's SuperLink certificate and forwards only the
Fleet API, POST only, to the SuperLink over TLS that it verifies against the federation's
CA. Everything else is refused: 404 for every other path, 403 for another method and for
the Fleet API's self-(un)registration, which authenticated federations never use.

:func:`nginx_config` is pure (text from a :class:`NginxSite`); :func:`nginx_site` builds a
site from the PKI folder and checks it; :func:`write_nginx_config` writes the file;
:func:`start_nginx` runs one under a :class:`~deployment.processes.Supervisor` (tests,
``deploy local``). Relative paths in the config (pid, logs, temp folders) live under
nginx's prefix: ``nginx -c FILE -p PREFIX/``.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from common.errors import ConfigError, invalid_value
from common.files import atomic_path
from deployment.pki import PkiPaths
from deployment.processes import DeployError, Started, Supervisor, wait_for_port

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
# Fleet endpoints are lowercase words joined by '-' (`pull-messages`, `push-object`, ...):
# one path segment, so no encoded slash or dot segment can leave `/v1/fleet/`.
FLEET_PATH = r"^/v1/fleet/[a-z0-9-]+$"
# Self-registration through the Fleet API; an authenticated SuperLink refuses it anyway.
REFUSED_FLEET_PATH = r"^/v1/fleet/(register|unregister)-node$"
DEFAULT_MAX_BODY = "256m"  # one pushed object is at most a 5 MB array chunk; headroom
START_TIMEOUT = 30.0
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d+)$")
_SIZE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_WORKERS = re.compile(r"^(auto|[1-9][0-9]*)$")
_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class NginxSite:
    """Everything the nginx config says; paths are absolute."""

    listen: Address
    superlink: Address
    server_cert: Path  # presented to hospitals (the SuperLink's own certificate)
    server_key: Path
    ca_cert: Path  # verifies the SuperLink behind nginx
    upstream_name: str  # a DNS name in the SuperLink certificate, checked by nginx
    user: str | None = None  # worker user; only when nginx starts as root
    workers: str = "auto"
    max_body: str = DEFAULT_MAX_BODY


def parse_address(text: str, flag: str) -> Address:
    """``HOST:PORT`` or ``[IPv6]:PORT`` with a port in 1..65535."""
    match = _HOST_PORT.match(text)
    port = int(match["port"]) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise ConfigError(invalid_value(flag, "HOST:PORT with a port in 1..65535", text))
    return Address(match["v6"] or match["host"], port)


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def nginx_site(
    pki_dir: Path,
    listen: str,
    superlink: str,
    user: str | None = None,
    workers: str = "auto",
    max_body: str = DEFAULT_MAX_BODY,
) -> NginxSite:
    """A checked site: the SuperLink on loopback, named by its certificate, files present."""
    paths = PkiPaths(pki_dir.resolve())
    front = parse_address(listen, "--listen")
    upstream = parse_address(superlink, "--superlink")
    if not is_loopback(upstream.host):
        raise ConfigError(
            invalid_value("--superlink", "a loopback HOST:PORT (e.g. 127.0.0.1:9091)", superlink)
        )
    if not _WORKERS.match(workers):
        raise ConfigError(invalid_value("--workers", "`auto` or an integer ≥ 1", workers))
    if not _SIZE.match(max_body):
        raise ConfigError(invalid_value("--max-body-size", "a size such as 256m", max_body))
    if user is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", user):
        raise ConfigError(invalid_value("--user", "a user name", user))
    for path in (paths.ca_cert, paths.server_cert, paths.server_key):
        if not path.is_file():
            raise ConfigError(f"Missing {path}. Create the PKI first: fedclinic pki init DIR.")
    dns_names, ips = certificate_names(paths.server_cert)
    named = upstream.host in dns_names or _ip_in(upstream.host, ips)
    if not named:
        raise ConfigError(
            f"The SuperLink certificate {paths.server_cert} does not name {upstream.host}; "
            "the SuperLink's own ServerApp and operators on this host dial it there. "
            f"Re-create it with `fedclinic pki init DIR --host {upstream.host} ...`."
        )
    if not dns_names:
        raise ConfigError(
            f"The SuperLink certificate {paths.server_cert} names no DNS host (nginx checks "
            "the upstream by DNS name). Re-create it with a --host such as localhost."
        )
    upstream_name = "localhost" if "localhost" in dns_names else dns_names[0]
    return NginxSite(
        listen=front,
        superlink=upstream,
        server_cert=paths.server_cert,
        server_key=paths.server_key,
        ca_cert=paths.ca_cert,
        upstream_name=upstream_name,
        user=user,
        workers=workers,
        max_body=max_body,
    )


def certificate_names(cert: Path) -> tuple[list[str], list[str]]:
    """The DNS names and IP addresses in ``cert``'s subject alternative names."""
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return list(sans.get_values_for_type(x509.DNSName)), ips


def nginx_config(site: NginxSite) -> str:
    """The complete nginx config (``nginx -c FILE -p PREFIX/``) for ``site``."""
    user = f"user {site.user};\n" if site.user else ""
    return f"""\
# fedclinic perimeter: nginx in front of the SuperLink (written by `fedclinic perimeter nginx`).
# Hospitals reach the Fleet API only; the Control and Runtime APIs, /docs and /openapi.json
# stay on the coordinator's loopback. Run: nginx -c THIS_FILE -p PREFIX/
# (pid, logs and temp folders below are relative to PREFIX).
{user}worker_processes {site.workers};
daemon off;
pid nginx.pid;
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    # request_time - upstream_response_time = what nginx adds to a Fleet call.
    log_format fedclinic '$remote_addr [$time_local] "$request" $status '
                         '$request_length $bytes_sent rt=$request_time '
                         'urt=$upstream_response_time';
    access_log access.log fedclinic;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    server_tokens off;
    default_type application/octet-stream;

    # The SuperLink: uvicorn speaks HTTP/1.1 with TLS; connections are kept open.
    upstream fedclinic_superlink {{
        server {site.superlink};
        keepalive 16;
    }}

    server {{
        listen {site.listen} ssl;
        ssl_certificate {site.server_cert};
        ssl_certificate_key {site.server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:fedclinic_tls:10m;
        ssl_session_timeout 1h;
        # Model arrays travel as objects of at most 5 MB each (Flower's chunk size).
        client_max_body_size {site.max_body};
        client_body_buffer_size 8m;
        client_body_timeout 60s;
        keepalive_timeout 75s;

        location ~ {REFUSED_FLEET_PATH} {{
            return 403;
        }}

        location ~ {FLEET_PATH} {{
            limit_except POST {{
                deny all;
            }}
            proxy_pass https://fedclinic_superlink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {site.ca_cert};
            proxy_ssl_verify_depth 2;
            proxy_ssl_name {site.upstream_name};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
            proxy_connect_timeout 10s;
            proxy_send_timeout 120s;
            proxy_read_timeout 120s;
            proxy_buffering off;
        }}

        # The Control API, the Runtime API, /docs, /openapi.json, /health and anything else.
        location / {{
            return 404;
        }}
    }}
}}
"""


def write_nginx_config(out: Path, site: NginxSite, force: bool = False) -> Path:
    """Write ``nginx_config(site)`` to ``out`` atomically (0644); no overwrite without force."""
    if out.exists() and not force:
        raise ConfigError(f"Refusing to overwrite {out}. Pass --force to replace it.")
    with atomic_path(out) as tmp:
        os.chmod(tmp, 0o644)
        tmp.write_text(nginx_config(site), encoding="utf-8")
    return out


def nginx_binary() -> str:
    """The nginx executable: on PATH or in Debian's /usr/sbin."""
    found = shutil.which("nginx") or next(
        (c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None
    )
    if found is None:
        raise DeployError("nginx is not installed. Install it as root: apt-get install nginx")
    return found


def start_nginx(
    supervisor: Supervisor, site: NginxSite, prefix: Path, timeout: float = START_TIMEOUT
) -> Started:
    """Run nginx for ``site`` in the foreground under ``supervisor``, files under ``prefix``.

    One worker; when this process is root the worker runs as root too, so it can use the
    prefix folder (a test's temporary folder) that only this user may enter.
    """
    prefix = prefix.resolve()
    prefix.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser() if os.geteuid() == 0 else None
    config = prefix / "nginx.conf"
    write_nginx_config(config, replace(site, user=user, workers="1"), force=True)
    argv = [nginx_binary(), "-c", str(config), "-p", f"{prefix}/"]
    started = supervisor.start("nginx", argv, cwd=prefix)
    wait_for_port(started, site.listen.port, timeout, host=site.listen.host)
    return started


def _ip_in(host: str, ips: list[str]) -> bool:
    try:
        return any(ipaddress.ip_address(host) == ipaddress.ip_address(ip) for ip in ips)
    except ValueError:
        return False
