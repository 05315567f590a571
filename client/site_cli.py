"""``fedclinic site check DATA_PATH``: is this hospital's data ready for the federation?

The data contract (class names, image size, channels, minimum size) is the one declared
in the app manifest, the first found of: --manifest PATH; the federation's app a SuperNode
installed under $FLWR_HOME/apps/ (default ~/.flwr); the manifest installed with fedclinic;
a source checkout's pyproject.toml. The options below override single values.
Exit code 0 when the data passes, 1 when any problem is found (notes about images the
loader converts, resizes or ignores do not fail the check). Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.executor_cli import add_executor_commands

if TYPE_CHECKING:
    from client.contract_lookup import Contract
    from common.config import AppConfig

EXIT_OK = 0
EXIT_PROBLEMS = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "site",
        help="tools for a hospital's site",
        description="Tools for a hospital's site.",
    )
    commands = parser.add_subparsers(dest="site_command", metavar="SITE_COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="validate a site's data as the ClientApp will, and summarise it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("data_path", metavar="DATA_PATH", type=Path, help="image folder or .npz")
    check.add_argument("--site-name", help="name shown in messages (default: the folder name)")
    check.add_argument("--class-names", help="comma-separated, e.g. normal,pneumonia")
    check.add_argument("--image-size", type=int, help="pixels per side the model expects")
    check.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (colour)")
    check.add_argument("--min-examples", type=int, help="fewest train and held-out images")
    check.add_argument("--holdout-fraction", type=float, help="held-out share without test/")
    check.add_argument("--val-fraction", type=float, help="validation share without val/")
    check.add_argument("--seed", type=int, help="seeds the held-out split")
    check.add_argument("--manifest", type=Path, help="the app's pyproject.toml")
    check.set_defaults(handler=run_check)
    add_executor_commands(commands)  # site approve, site serve
    keygen = commands.add_parser(
        "keygen",
        help="make this site's SuperNode key; print the public line to send to the coordinator",
        description="Write DIR/NAME.key (the SuperNode's private key, mode 0600: it never "
        "leaves this machine) and DIR/NAME.pub (the public key line to send to the "
        "coordinator, who records it with `fedclinic pki add-site DIR NAME --public-key "
        "NAME.pub`). Nothing is overwritten without --force.",
    )
    keygen.add_argument("dir", metavar="DIR", type=Path, help="folder for the key files")
    keygen.add_argument("name", metavar="NAME", help="the site's name, e.g. st-marys")
    keygen.add_argument("--force", action="store_true", help="replace an existing key pair")
    keygen.set_defaults(handler=run_keygen)


def run_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from client.site_check import check_site

    config, contract = _data_config(args)
    path = args.data_path.expanduser().resolve()
    name = args.site_name or path.stem
    data = config.data
    report = check_site(
        path, data.spec(), name, data.holdout_fraction, config.seed, data.val_fraction
    )
    out = Console(soft_wrap=True)
    out.print(f"Contract: {contract.path} ({contract.origin})", markup=False, highlight=False)
    _print_report(report, out, Console(stderr=True, soft_wrap=True))
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def run_keygen(args: argparse.Namespace) -> int:
    from rich.console import Console

    from client.keys import generate_site_key

    key = generate_site_key(args.dir, args.name, force=args.force)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[green]Created[/green] the SuperNode key of {key.name}")
    console.print(
        f"  private key (stays here; flower-supernode --auth-supernode-private-key): "
        f"{key.private_key}"
    )
    console.print(f"  public key: {key.public_key}  fingerprint {key.fingerprint}")
    console.print(
        "Send the coordinator this line (or the .pub file), and confirm the "
        "fingerprint with them by another channel:"
    )
    console.print(key.public_line, markup=False)
    return EXIT_OK


def _data_config(args: argparse.Namespace) -> tuple[AppConfig, Contract]:
    from client.contract_lookup import find_manifest
    from common.config import parse_app_config
    from common.manifest import declared_defaults

    contract = find_manifest(args.manifest)
    values = declared_defaults(contract.path)
    for key in (
        "class_names",
        "image_size",
        "channels",
        "min_examples",
        "holdout_fraction",
        "val_fraction",
    ):
        if getattr(args, key) is not None:
            values[key.replace("_", "-")] = getattr(args, key)
    if args.seed is not None:
        values["seed"] = args.seed
    return parse_app_config(values), contract


def _print_report(report: Any, out: Any, err: Any) -> None:
    from rich.table import Table

    spec = report.spec
    out.print(f"[bold]Site[/bold] {report.site_name}: {report.path}")
    out.print(
        f"Expected: classes {', '.join(spec.class_names)}; "
        f"{spec.image_size}x{spec.image_size}x{spec.channels}; "
        f"at least {spec.min_examples} train and held-out images"
    )
    if report.splits:
        caption = None if report.loaded else "image files found (the loader refused the data)"
        table = Table(*["split", *spec.class_names, "total", "shape", "values"], caption=caption)
        for split in report.splits:
            shape = "x".join(str(d) for d in split.shape) if split.shape else "-"
            low, high = split.value_range or (None, None)
            values = f"{low:.3g}..{high:.3g}" if split.value_range else "-"
            table.add_row(
                split.name,
                *[str(split.per_class[name]) for name in spec.class_names],
                str(split.examples),
                shape,
                values,
            )
        out.print(table)
    else:
        out.print("No images per class to show: the loader could not read any split.")
    if report.notes:
        out.print(f"{len(report.notes)} note(s): images the loader converts, resizes or skips:")
        for note in report.notes:
            out.print(f"- {note}", markup=False, highlight=False)
    if report.ok:
        out.print("[green]OK[/green]: the federation will accept this data.")
        return
    err.print(
        f"[red]{len(report.problems)} problem(s)[/red] in {report.path}:",
        highlight=False,
        soft_wrap=True,
    )
    for problem in report.problems:
        err.print(f"- {problem}", markup=False, highlight=False, soft_wrap=True)
