"""``fedclinic pki``: the federation's certificate authority and SuperNode keys.

  fedclinic pki init DIR --host superlink.example.org --host 10.0.0.5
  fedclinic pki add-site DIR st-marys

``init`` writes ca.crt/ca.key and the SuperLink's superlink.crt/superlink.key (its subject
alternative names are the --host values). ``add-site`` writes sites/NAME.key (give it to
the hospital; mode 0600) and sites/NAME.pub (register it with ``flwr supernode
register``). Nothing is overwritten without --force.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deployment.pki import DEFAULT_DAYS, DEFAULT_HOSTS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pki",
        help="create the CA, the SuperLink certificate and SuperNode keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)
    init = commands.add_parser(
        "init", help="create the CA and the SuperLink's TLS certificate in DIR"
    )
    init.add_argument("dir", metavar="DIR", type=Path)
    init.add_argument(
        "--host",
        action="append",
        dest="hosts",
        help="DNS name or IP address the SuperLink is reached at (repeatable; "
        f"default: {' '.join(DEFAULT_HOSTS)})",
    )
    init.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(handler=run_init)
    site = commands.add_parser("add-site", help="create a site's SuperNode key pair in DIR/sites")
    site.add_argument("dir", metavar="DIR", type=Path)
    site.add_argument("name", metavar="NAME")
    site.add_argument("--force", action="store_true", help="replace an existing key pair")
    site.set_defaults(handler=run_add_site)


def run_init(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deployment.pki import init_pki

    hosts = tuple(args.hosts) if args.hosts else DEFAULT_HOSTS
    paths = init_pki(args.dir, hosts=hosts, days=args.days, force=args.force)
    console = Console()
    console.print(f"[green]Created[/green] the federation's PKI in {paths.root}", soft_wrap=True)
    for label, path in (
        ("CA certificate (give to every site)", paths.ca_cert),
        ("CA private key (keep offline)", paths.ca_key),
        ("SuperLink certificate", paths.server_cert),
        ("SuperLink private key", paths.server_key),
    ):
        console.print(f"  {label}: {path}", soft_wrap=True, highlight=False)
    console.print(f"  valid {args.days} days for: {', '.join(hosts)}", highlight=False)
    return 0


def run_add_site(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deployment.pki import add_site

    keys = add_site(args.dir, args.name, force=args.force)
    console = Console()
    console.print(f"[green]Created[/green] the SuperNode key pair of {keys.name}", soft_wrap=True)
    console.print(f"  private key (give to the site): {keys.private_key}", soft_wrap=True)
    console.print(f"  public key (register it): {keys.public_key}", soft_wrap=True)
    return 0
