"""The hospital executor: one long-lived process runs every task of the hospital's SuperNode.

The SuperNode runs with ``--isolation process`` and a SuperExec secret and no
``flower-superexec``; this loop takes its place. It imports the hospital's *installed*
ClientApp (``client.app:app``, privacy mods included) once, so the model, traced graphs
and data stay warm across messages, and for every task:

1. pulls the task's inputs (run, bundle, context) — nothing of the run has executed;
2. decides with the site's approvals (:func:`client.approval.decide`, re-read per task);
3. pulls the message and either runs the installed ClientApp on it or refuses it with an
   ``INVALID_FAB`` error reply and one line in the site log;
4. pushes exactly one reply and the task's outcome, heartbeating while it works.

The bundle itself is never installed or imported: it is data used to decide.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from logging import ERROR, WARNING
from pathlib import Path
from typing import Protocol

from flwr.app import Context, Error, Message
from flwr.common import log
from flwr.common.constant import ErrorCode, SubStatus

from client.approval import Decision, decide, load_approvals
from client.runtime_link import AcquiredTask, TaskInput, retryable
from common.errors import FedclinicError

HEARTBEAT_INTERVAL = 10.0  # seconds; a pulled task's token lapses after ~60 s without one
REFUSED_PREFIX = "Refused by the site"
APPROVALS_UNREADABLE = "site approvals file unreadable"


class ClientAppLike(Protocol):
    def __call__(self, message: Message, context: Context) -> Message: ...


class TaskPort(Protocol):
    """One claimed task (:class:`client.runtime_link.TaskLink`)."""

    def pull_input(self) -> TaskInput: ...
    def pull_message(self, context: Context) -> Message: ...
    def push_reply(self, reply: Message, context: Context) -> None: ...
    def push_output(self, context: Context | None, sub_status: str, details: str) -> None: ...
    def heartbeat(self) -> bool: ...
    def close(self) -> None: ...


class LinkPort(Protocol):
    """Where tasks come from (:class:`client.runtime_link.RuntimeLink`)."""

    def acquire(self) -> AcquiredTask | None: ...
    def task(self, acquired: AcquiredTask) -> TaskPort: ...


@dataclass(frozen=True)
class Served:
    """What one task came to (for logs, tests and measurements)."""

    run_id: int
    outcome: str  # "ran", "refused" or "failed"
    detail: str
    seconds: float
    phases: tuple[tuple[str, float], ...] = ()  # (phase, seconds): input, message, app, reply

    def timing(self) -> str:
        return ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.phases)


def refusal_reason(kind: str) -> str:
    """What the coordinator learns of a refusal: its kind only."""
    return f"{REFUSED_PREFIX}: {kind}"


def exception_reason(error: BaseException) -> str:
    return f"{type(error).__name__} in the hospital executor (details in the site log)"


def installed_client_app() -> ClientAppLike:
    """The hospital's own ClientApp, imported once from the installed package."""
    from client.app import app

    return app


def installed_version() -> str:
    from importlib.metadata import version

    return version("fedclinic")


class Marks:
    """Seconds spent in each phase of a task, measured from ``start``."""

    def __init__(self, start: float) -> None:
        self.last = start
        self.phases: tuple[tuple[str, float], ...] = ()

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases += ((phase, round(now - self.last, 4)),)
        self.last = now


class Heartbeat:
    """Keeps a task's token alive from a background thread; never signals the process."""

    def __init__(self, task: TaskPort, interval: float = HEARTBEAT_INTERVAL) -> None:
        self.task = task
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="task-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.task.heartbeat():
                    log(WARNING, "[fedclinic] The SuperNode no longer holds the current task.")
            except Exception as error:
                log(WARNING, "[fedclinic] Task heartbeat failed: %s", error)


class HospitalExecutor:
    """Serves every ClientApp task of one SuperNode with the installed, approved app."""

    def __init__(
        self,
        link: LinkPort,
        approvals: Path,
        app: ClientAppLike,
        version: str,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.link = link
        self.approvals = approvals
        self.app = app
        self.version = version
        self.heartbeat_interval = heartbeat_interval

    def serve(
        self,
        stop: threading.Event,
        poll_interval: float = 0.2,
        on_task: Callable[[Served], None] = lambda served: None,
    ) -> None:
        """Acquire and handle tasks until ``stop`` is set; an unreachable SuperNode is waited
        for (logged once per outage), a refused secret ends the loop (:class:`LinkError`)."""
        unreachable = False
        while not stop.is_set():
            try:
                acquired = self.link.acquire()
            except Exception as error:
                if not retryable(error):
                    raise
                if not unreachable:
                    log(WARNING, "[fedclinic] SuperNode unreachable, retrying: %s", error)
                unreachable = True
                stop.wait(1.0)
                continue
            unreachable = False
            if acquired is None:
                stop.wait(poll_interval)
                continue
            on_task(self.handle(acquired))

    def handle(self, acquired: AcquiredTask) -> Served:
        """One task: exactly one reply (when its message could be read) and one outcome."""
        started = time.monotonic()
        marks = Marks(started)
        task = self.link.task(acquired)
        try:
            with Heartbeat(task, self.heartbeat_interval):
                outcome, detail = self._handle(task, acquired, marks)
        finally:
            task.close()
        return Served(acquired.run_id, outcome, detail, time.monotonic() - started, marks.phases)

    def _handle(self, task: TaskPort, acquired: AcquiredTask, marks: Marks) -> tuple[str, str]:
        context: Context | None = None  # addresses the reply
        state: Context | None = None  # stored back at the SuperNode (approved runs only)
        message: Message | None = None
        reply: Message | None = None
        status, details, outcome = SubStatus.FAILED, "", "failed"
        try:
            inputs = task.pull_input()
            marks.mark("input")
            context = inputs.context
            decision = self._decide(inputs)
            message = task.pull_message(context)
            marks.mark("message")
            if decision.run:
                state = context
                reply = self.app(message=message, context=context)
                status, outcome = SubStatus.COMPLETED, "ran"
                marks.mark("app")
            else:
                _log_refusal(acquired, inputs, decision)
                reason = refusal_reason(decision.kind)
                reply = Message(Error(ErrorCode.INVALID_FAB, reason), reply_to=message)
                details, outcome = decision.kind, "refused"
        except Exception as error:
            log(
                ERROR,
                "[fedclinic] Task of run %s failed:\n%s",
                acquired.run_id,
                traceback.format_exc(),
            )
            details = exception_reason(error)
            if message is not None:
                error_reply = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, details)
                reply = Message(error_reply, reply_to=message)
        if reply is not None and context is not None:
            try:
                task.push_reply(reply, context)
            except Exception:
                log(ERROR, "[fedclinic] Could not push the reply:\n%s", traceback.format_exc())
        try:
            task.push_output(state, status, details)
        except Exception:
            log(ERROR, "[fedclinic] Could not push the task outcome:\n%s", traceback.format_exc())
        marks.mark("reply")
        return outcome, details

    def _decide(self, inputs: TaskInput) -> Decision:
        try:
            approvals = load_approvals(self.approvals)
        except (FedclinicError, OSError) as error:
            log(ERROR, "[fedclinic] %s", error)
            return Decision(False, APPROVALS_UNREADABLE)
        run = inputs.run
        return decide(
            approvals, run.fab_id, run.fab_version, run.fab_hash, inputs.fab.content, self.version
        )


def _log_refusal(acquired: AcquiredTask, inputs: TaskInput, decision: Decision) -> None:
    """The one line a refusal leaves in the site log: which app, version and hash, and why."""
    log(
        WARNING,
        "[fedclinic] Refused run %s: app %s version %s (FAB %s): %s",
        acquired.run_id,
        inputs.run.fab_id or "?",
        inputs.run.fab_version or "?",
        inputs.run.fab_hash or "?",
        decision.kind,
    )
