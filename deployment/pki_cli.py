"""``fedclinic pki``: the federation's certificate authority and SuperNode keys.

  fedclinic pki init DIR --host superlink.example.org --host 10.0.0.5
  fedclinic pki add-site DIR st-marys --public-key st-marys.pub

``init`` writes ca.crt (give it to every site), ca-private/ca.key (move it offline) and the
SuperLink's superlink/superlink.crt|.key (subject alternative names: the --host values
and always localhost, 127.0.0.1 and ::1, which the ServerApp and the perimeter's proxy use).
``add-site`` records the public key a hospital made with ``fedclinic site keygen`` in
sites/NAME.pub (register it with ``flwr supernode register``) and in the site registry
sites.json (run-config ``site-registry``: the coordinator names nodes from it). The
coordinator never holds a site's private key; ``--generate`` makes one here for test
set-ups only. Nothing is overwritten without --force.
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
        f"{' '.join(DEFAULT_HOSTS)} are always added)",
    )
    init.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(handler=run_init)
    site = commands.add_parser(
        "add-site", help="record a site's SuperNode public key in DIR/sites and DIR/sites.json"
    )
    site.add_argument("dir", metavar="DIR", type=Path)
    site.add_argument("name", metavar="NAME")
    source = site.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="the NAME.pub line the site sent (made by `fedclinic site keygen`)",
    )
    source.add_argument(
        "--generate",
        action="store_true",
        help="make the key pair here instead (test set-ups only: the coordinator then "
        "holds the site's private key)",
    )
    site.add_argument("--force", action="store_true", help="replace the site's recorded key")
    site.set_defaults(handler=run_add_site)


def run_init(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deployment.pki import init_pki

    hosts = tuple(dict.fromkeys((*(args.hosts or ()), *DEFAULT_HOSTS)))
    paths = init_pki(args.dir, hosts=hosts, days=args.days, force=args.force)
    console = Console()
    console.print(f"[green]Created[/green] the federation's PKI in {paths.root}", soft_wrap=True)
    for label, path in (
        ("CA certificate (give to every site)", paths.ca_cert),
        ("CA private key (move offline)", paths.ca_key),
        ("SuperLink certificate", paths.server_cert),
        ("SuperLink private key", paths.server_key),
    ):
        console.print(f"  {label}: {path}", soft_wrap=True, highlight=False)
    console.print(f"  valid {args.days} days for: {', '.join(hosts)}", highlight=False)
    return 0


def run_add_site(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deployment.pki import PkiPaths, add_site

    keys = add_site(
        args.dir, args.name, public_key=args.public_key, generate=args.generate, force=args.force
    )
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[green]Recorded[/green] site {keys.name}: key {keys.fingerprint}")
    console.print("  compare this fingerprint with the one the site's `site keygen` printed")
    console.print(f"  public key (register it): {keys.public_key}")
    console.print(f"  site registry: {PkiPaths(args.dir).registry}")
    if args.generate:
        console.print(
            f"  [yellow]private key made here (test set-ups only)[/yellow]: {keys.private_key}"
        )
    return 0
