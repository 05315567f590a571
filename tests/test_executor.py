"""The hospital executor's task handling, against a fake Runtime API link.

Every task ends in exactly one task output and, once its message was read, exactly one
reply: the installed ClientApp's (approved), an ``INVALID_FAB`` refusal naming only the
kind (not approved, version, unreadable approvals), or ``CLIENT_APP_RAISED_EXCEPTION``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore.fab import Fab
from flwr.supercore.run import Run

from client.approval import (
    NOT_APPROVED,
    VERSION_DIFFERS,
    Approval,
    save_approvals,
)
from client.executor import (
    APPROVALS_UNREADABLE,
    REFUSED_PREFIX,
    HospitalExecutor,
    Served,
    TaskPort,
)
from client.runtime_link import AcquiredTask, LinkError, TaskInput, retryable

BUNDLE = b"the approved bundle"
BUNDLE_HASH = hashlib.sha256(BUNDLE).hexdigest()
OTHER = b"a modified bundle"
FAB_ID, VERSION = "fedclinic/fedclinic", "0.1.0"
ACQUIRED = AcquiredTask(task_id=7, run_id=42, token="token")

pytestmark = pytest.mark.usefixtures("task_identity")


@dataclass
class FakeTask:
    """One task as the SuperNode would hand it out; records what the executor pushes."""

    content: bytes = BUNDLE
    fail_message: bool = False
    replies: list[Message] = field(default_factory=list)
    outputs: list[tuple[Context | None, str, str]] = field(default_factory=list)
    closed: bool = False

    def pull_input(self) -> TaskInput:
        run = dataclasses.replace(
            Run.create_empty(ACQUIRED.run_id),
            fab_id=FAB_ID,
            fab_version=VERSION,
            fab_hash=hashlib.sha256(self.content).hexdigest(),
        )
        context = Context(
            run_id=ACQUIRED.run_id, node_id=1, node_config={}, state=RecordDict(), run_config={}
        )
        return TaskInput(run, Fab(run.fab_hash, self.content, {}), context)

    def pull_message(self, context: Context) -> Message:
        if self.fail_message:
            raise httpx.ConnectError("gone")
        message = Message(RecordDict({"config": ConfigRecord({"x": 1})}), 1, "train")
        message.metadata.__dict__["_message_id"] = message.object_id
        return message

    def push_reply(self, reply: Message, context: Context) -> None:
        self.replies.append(reply)

    def push_output(self, context: Context | None, sub_status: str, details: str) -> None:
        self.outputs.append((context, sub_status, details))

    def heartbeat(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeLink:
    tasks: list[FakeTask]
    errors: list[Exception] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def acquire(self) -> AcquiredTask | None:
        if self.errors:
            raise self.errors.pop(0)
        if not self.tasks:
            self.stop.set()
            return None
        return ACQUIRED

    def task(self, acquired: AcquiredTask) -> TaskPort:
        return self.tasks.pop(0)


class FakeApp:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def __call__(self, message: Message, context: Context) -> Message:
        self.calls += 1
        if self.fail:
            raise RuntimeError("/data/patients/secret.png unreadable")
        return Message(RecordDict({"metrics": ConfigRecord({"ok": 1})}), reply_to=message)


def _approvals(tmp_path: Path) -> Path:
    path = tmp_path / "approvals.json"
    save_approvals(path, [Approval(FAB_ID, VERSION, BUNDLE_HASH, "")])
    return path


@pytest.mark.parametrize(
    ("content", "installed", "outcome", "code", "reason"),
    [
        (BUNDLE, VERSION, "ran", None, None),
        (OTHER, VERSION, "refused", ErrorCode.INVALID_FAB, f"{REFUSED_PREFIX}: {NOT_APPROVED}"),
        (BUNDLE, "0.2.0", "refused", ErrorCode.INVALID_FAB, f"{REFUSED_PREFIX}: {VERSION_DIFFERS}"),
    ],
    ids=["approved", "not-approved", "installed-version-differs"],
)
def test_one_reply_and_one_output_per_task(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    installed: str,
    outcome: str,
    code: int | None,
    reason: str | None,
) -> None:
    # Prepare
    task, app = FakeTask(content), FakeApp()
    executor = HospitalExecutor(FakeLink([task]), _approvals(tmp_path), app, installed)
    # Execute
    with caplog.at_level(logging.INFO, logger="flwr"):
        served = executor.handle(ACQUIRED)
    # Assert
    assert served.outcome == outcome
    assert len(task.replies) == 1
    assert len(task.outputs) == 1
    assert task.closed
    reply, (context, status, details) = task.replies[0], task.outputs[0]
    refusals = [r.getMessage() for r in caplog.records if "Refused run" in r.getMessage()]
    if outcome == "ran":
        assert app.calls == 1
        assert not reply.has_error()
        assert status == SubStatus.COMPLETED
        assert context is not None
        assert refusals == []
    else:
        assert app.calls == 0
        assert reply.error.code == code
        assert reply.error.reason == reason
        assert (context, status, f"{REFUSED_PREFIX}: {details}") == (None, SubStatus.FAILED, reason)
        assert refusals == [
            f"[fedclinic] Refused run 42: app {FAB_ID} version {VERSION} "
            f"(FAB {hashlib.sha256(content).hexdigest()}): {details}"
        ]


def test_unreadable_approvals_refuse(tmp_path: Path) -> None:
    path = tmp_path / "approvals.json"
    path.write_text("{", encoding="utf-8")
    task, app = FakeTask(), FakeApp()
    HospitalExecutor(FakeLink([task]), path, app, VERSION).handle(ACQUIRED)
    assert app.calls == 0
    assert task.replies[0].error.reason == f"{REFUSED_PREFIX}: {APPROVALS_UNREADABLE}"


def test_exception_in_app_sends_only_its_kind(tmp_path: Path) -> None:
    task = FakeTask()
    served = HospitalExecutor(
        FakeLink([task]), _approvals(tmp_path), FakeApp(True), VERSION
    ).handle(ACQUIRED)
    kind = "RuntimeError in the hospital executor (details in the site log)"
    assert served.outcome == "failed"
    assert len(task.replies) == 1
    assert len(task.outputs) == 1
    assert task.replies[0].error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert task.replies[0].error.reason == kind
    assert task.outputs[0][1:] == (SubStatus.FAILED, kind)


def test_unreadable_message_still_ends_the_task(tmp_path: Path) -> None:
    task = FakeTask(fail_message=True)
    HospitalExecutor(FakeLink([task]), _approvals(tmp_path), FakeApp(), VERSION).handle(ACQUIRED)
    assert task.replies == []
    assert task.outputs == [
        (None, SubStatus.FAILED, "ConnectError in the hospital executor (details in the site log)")
    ]


def test_serve_keeps_serving_after_refusals_and_outages(tmp_path: Path) -> None:
    # Prepare: a refused task, an outage, then an approved task
    link = FakeLink([FakeTask(OTHER), FakeTask()], errors=[])
    app = FakeApp()
    executor = HospitalExecutor(link, _approvals(tmp_path), app, VERSION)
    served: list[Served] = []
    link.errors.append(httpx.ConnectError("refused"))
    # Execute
    executor.serve(link.stop, poll_interval=0.01, on_task=served.append)
    # Assert
    assert [s.outcome for s in served] == ["refused", "ran"]
    assert [name for name, _ in served[1].phases] == ["input", "message", "app", "reply"]
    assert app.calls == 1


def test_serve_stops_on_a_refused_secret(tmp_path: Path) -> None:
    response = httpx.Response(401, request=httpx.Request("POST", "http://127.0.0.1"))
    link = FakeLink([], errors=[LinkError("The SuperNode refused the executor (401)")])
    executor = HospitalExecutor(link, _approvals(tmp_path), FakeApp(), VERSION)
    with pytest.raises(LinkError):
        executor.serve(link.stop, poll_interval=0.01)
    assert not retryable(httpx.HTTPStatusError("401", request=response.request, response=response))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("down"), True),
        (httpx.ReadTimeout("slow"), True),
        (503, True),
        (500, True),
        (401, False),
        (403, False),
        (404, False),
        (ValueError("bad payload"), False),
    ],
)
def test_retry_only_transport_errors_and_5xx(error: Exception | int, expected: bool) -> None:
    if isinstance(error, int):
        request = httpx.Request("POST", "http://127.0.0.1/v1/runtime/acquire-task")
        response = httpx.Response(error, request=request)
        error = httpx.HTTPStatusError(str(error), request=request, response=response)
    assert retryable(error) is expected
