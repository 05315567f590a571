"""Errors that reach a person: one line saying what, where, expected and received."""

from __future__ import annotations


class FedclinicError(Exception):
    """Base class for every error fedclinic reports to a person.

    Its message is a single line; entry points print it and exit non-zero instead of
    showing a traceback.
    """


class ConfigError(FedclinicError):
    """A configuration value is missing or invalid."""


class RunError(FedclinicError):
    """The federation cannot continue: too few hospitals, a checkpoint that does not fit, ..."""


class DataError(FedclinicError):
    """A hospital's data is unreadable or fails validation.

    ``problems`` lists every problem found; the message names the first ones.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"Invalid data in {source}: {shown}{more}")


def invalid_value(key: str, expected: str, received: object) -> str:
    """Keras-style message: ``Invalid value for `key`. Expected ... Received: ...``."""
    return f"Invalid value for `{key}`. Expected {expected}. Received: {received!r}"
