"""``fedclinic perimeter``: the reverse proxy that keeps the SuperLink's controls inside.

  fedclinic perimeter nginx PKI_DIR --listen 0.0.0.0:9093 --superlink 127.0.0.1:9091 \\
      --out /etc/fedclinic/nginx.conf

writes a complete nginx config: TLS for the hospitals with the federation's SuperLink
certificate, only POSTs to the Fleet API (/v1/fleet/...) forwarded to the SuperLink on
loopback (over TLS checked against the federation's CA), every other path refused. Run it
with ``nginx -c FILE -p PREFIX/`` (pid, access log and temp folders go under PREFIX; nginx
stays in the foreground, for systemd or a supervisor). Nothing is overwritten without --force.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deployment.perimeter import DEFAULT_MAX_BODY


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "perimeter",
        help="write the reverse proxy config that exposes only the Fleet API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="perimeter_command", metavar="PERIMETER_COMMAND", required=True
    )
    nginx = commands.add_parser(
        "nginx",
        help="write an nginx config for PKI_DIR's SuperLink",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    nginx.add_argument("pki_dir", metavar="PKI_DIR", type=Path, help="from `fedclinic pki init`")
    nginx.add_argument(
        "--listen", required=True, help="HOST:PORT the hospitals dial (e.g. 0.0.0.0:9093)"
    )
    nginx.add_argument(
        "--superlink",
        required=True,
        help="the SuperLink's loopback HOST:PORT (e.g. 127.0.0.1:9091)",
    )
    nginx.add_argument("--out", required=True, type=Path, help="the config file to write")
    nginx.add_argument(
        "--user", help="user of nginx's worker when nginx starts as root (e.g. www-data)"
    )
    nginx.add_argument("--workers", default="auto", help="worker processes (default: auto)")
    nginx.add_argument(
        "--max-body-size",
        default=DEFAULT_MAX_BODY,
        help=f"largest request body (default: {DEFAULT_MAX_BODY})",
    )
    nginx.add_argument("--force", action="store_true", help="replace an existing file")
    nginx.set_defaults(handler=run_nginx)


def run_nginx(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deployment.perimeter import nginx_site, write_nginx_config

    site = nginx_site(
        args.pki_dir,
        listen=args.listen,
        superlink=args.superlink,
        user=args.user,
        workers=args.workers,
        max_body=args.max_body_size,
    )
    out = write_nginx_config(args.out, site, force=args.force)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[green]Wrote[/green] {out}")
    console.print(f"  hospitals: https://{site.listen}/v1/fleet/ (POST only)")
    console.print(f"  forwarded to: https://{site.superlink} (verified as {site.upstream_name})")
    console.print("  everything else: 404 (403 for Fleet self-registration and other methods)")
    console.print(f"  check: nginx -t -c {out.resolve()} -p PREFIX/")
    console.print(f"  run:   nginx -c {out.resolve()} -p PREFIX/")
    return 0
