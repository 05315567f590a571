"""A site's approvals: the file, the decision table and the bundle hash of an app folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cli.main import main
from client.approval import (
    HASH_MISMATCH,
    IDENTITY_DIFFERS,
    NOT_APPROVED,
    VERSION_DIFFERS,
    Approval,
    ApprovalError,
    Decision,
    app_dir_bundle,
    decide,
    load_approvals,
    save_approvals,
    with_approval,
    without_hash,
)

BUNDLE = b"a bundle's bytes"
BUNDLE_HASH = hashlib.sha256(BUNDLE).hexdigest()
OTHER_HASH = hashlib.sha256(b"another bundle").hexdigest()
APPROVED = Approval("fedclinic/fedclinic", "0.1.0", BUNDLE_HASH, "2026-01-01T00:00:00Z")
MANIFEST = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tinyapp"
version = "1.2.3"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "tiny.server:app"
clientapp = "tiny.client:app"

[tool.flwr.app.config]
rounds = 1
"""


def _tiny_app(root: Path) -> Path:
    app = root / "tinyapp"
    (app / "tiny").mkdir(parents=True)
    (app / "pyproject.toml").write_text(MANIFEST, encoding="utf-8")
    for name in ("__init__.py", "client.py", "server.py"):
        (app / "tiny" / name).write_text("app = None\n", encoding="utf-8")
    return app


def test_approvals_file_round_trip(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "approvals.json"
    other = Approval("acme/tinyapp", "1.2.3", OTHER_HASH, "")
    # Execute
    save_approvals(path, [APPROVED, other])
    # Assert
    assert load_approvals(path) == [APPROVED, other]
    assert json.loads(path.read_text())["approvals"][0] == {
        "fab-id": "fedclinic/fedclinic",
        "version": "0.1.0",
        "fab-hash": BUNDLE_HASH,
        "approved-at": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("fab_id", "fab_version", "fab_hash", "content", "installed", "expected"),
    [
        ("fedclinic/fedclinic", "0.1.0", BUNDLE_HASH, BUNDLE, "0.1.0", Decision(True)),
        (
            "fedclinic/fedclinic",
            "0.1.0",
            OTHER_HASH,
            b"another bundle",
            "0.1.0",
            Decision(False, NOT_APPROVED),
        ),
        (
            "fedclinic/fedclinic",
            "0.1.0",
            BUNDLE_HASH,
            BUNDLE,
            "0.2.0",
            Decision(False, VERSION_DIFFERS),
        ),
        (
            "fedclinic/fedclinic",
            "0.1.1",
            BUNDLE_HASH,
            BUNDLE,
            "0.1.0",
            Decision(False, IDENTITY_DIFFERS),
        ),
        (
            "evil/fedclinic",
            "0.1.0",
            BUNDLE_HASH,
            BUNDLE,
            "0.1.0",
            Decision(False, IDENTITY_DIFFERS),
        ),
        (
            "fedclinic/fedclinic",
            "0.1.0",
            BUNDLE_HASH,
            b"swapped bytes",
            "0.1.0",
            Decision(False, HASH_MISMATCH),
        ),
    ],
    ids=[
        "approved",
        "unknown-hash",
        "installed-differs",
        "version-differs",
        "id-differs",
        "bytes-differ",
    ],
)
def test_decisions(
    fab_id: str,
    fab_version: str,
    fab_hash: str,
    content: bytes,
    installed: str,
    expected: Decision,
) -> None:
    assert decide([APPROVED], fab_id, fab_version, fab_hash, content, installed) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{",
            "Invalid approvals file {path}: not JSON (Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1))",
        ),
        ("[]", "Invalid approvals file {path}: expected an object with a list `approvals`."),
        (
            '{"approvals": [{"fab-id": "a/b"}]}',
            "Invalid approvals file {path}: entry 0 needs string `fab-id`, `version` and "
            "`fab-hash`.",
        ),
        (
            '{"approvals": [{"fab-id": "a/b", "version": "1", "fab-hash": "ABC"}]}',
            "Invalid approvals file {path}: entry 0 `fab-hash` is not 64 lowercase hex "
            "characters. Received: 'ABC'",
        ),
    ],
    ids=["not-json", "not-object", "missing-keys", "bad-hash"],
)
def test_malformed_approvals_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "approvals.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ApprovalError) as raised:
        load_approvals(path)
    assert str(raised.value) == message.format(path=path)


def test_with_and_without_approval() -> None:
    renewed = Approval(APPROVED.fab_id, APPROVED.version, BUNDLE_HASH, "later")
    other = Approval("acme/tinyapp", "1.2.3", OTHER_HASH, "")
    assert with_approval([APPROVED, other], renewed) == [other, renewed]
    assert without_hash([APPROVED, other], BUNDLE_HASH.upper()) == [other]
    with pytest.raises(ApprovalError, match=f"No approval with fab-hash {OTHER_HASH} to revoke"):
        without_hash([APPROVED], OTHER_HASH)


def test_app_dir_hash_is_what_flwr_run_ships(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    app = _tiny_app(tmp_path)
    assert app_dir_bundle(app) == build_fab_from_disk(app)
    assert (
        hashlib.sha256(app_dir_bundle(app)).hexdigest()
        == hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    )


def test_site_approve_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    from flwr.cli.build import build_fab_from_disk

    app = _tiny_app(tmp_path)
    expected = hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    fab = tmp_path / "tiny.fab"
    fab.write_bytes(build_fab_from_disk(app))
    approvals = tmp_path / "site" / "approvals.json"
    base = ["site", "approve", "--approvals", str(approvals)]
    # Execute
    codes = [
        main([*base, "--app-dir", str(app)]),
        main([*base, "--fab", str(fab)]),  # the same bundle: replaces, no duplicate
        main([*base, "--fab-hash", OTHER_HASH, "--fab-id", "acme/other", "--version", "2"]),
        main([*base, "--revoke", OTHER_HASH]),
        main([*base, "--fab-hash", OTHER_HASH]),
    ]
    # Assert
    out, err = capsys.readouterr()
    assert codes == [0, 0, 0, 0, 1]
    assert f"Approved acme/tinyapp 1.2.3 (FAB {expected}) in {approvals}" in out
    assert err.strip() == "error: `--fab-hash` needs `--fab-id` and `--version`."
    assert [(a.fab_id, a.version, a.fab_hash) for a in load_approvals(approvals)] == [
        ("acme/tinyapp", "1.2.3", expected)
    ]
