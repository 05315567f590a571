"""The machinery of the run settings: a frozen, strict pydantic base whose fields read as
kebab-case run-config keys, and validation that turns pydantic's errors into one Keras-style
line (:func:`common.errors.invalid_value`)."""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import ConfigError, invalid_value


def kebab(name: str) -> str:
    """``local_epochs`` → ``local-epochs``."""
    return name.replace("_", "-")


class Settings(BaseModel):
    model_config = ConfigDict(
        frozen=True, strict=True, extra="ignore", alias_generator=kebab, populate_by_name=True
    )


def kebab_keys(model: type[Settings]) -> list[str]:
    """The run-config keys of a settings model (``local_epochs`` → ``local-epochs``)."""
    return [kebab(name) for name in model.model_fields]


def section(model: type[Settings], run_config: dict[str, Any]) -> dict[str, Any]:
    """``model``'s keys out of a flat run config, each checked; a missing key is an error."""
    keys = kebab_keys(model)
    missing = [key for key in keys if key not in run_config]
    if missing:
        raise ConfigError(
            f"Missing config key `{missing[0]}`. Declare it in [tool.flwr.app.config] "
            "of pyproject.toml or pass it with --run-config."
        )
    values = {key: run_config[key] for key in keys}
    validate(model, values, source=run_config)
    return values


M_ = typing.TypeVar("M_", bound=Settings)


def validate(
    model: type[M_],
    values: dict[str, Any],
    source: dict[str, Any],
    required: tuple[str, ...] = (),
) -> M_:
    for key in required:
        if values.get(key) is None:
            raise ConfigError(f"Missing config key `{key}`.")
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_describe(model, err, source)) from None


def _describe(model: type[Settings], err: ValidationError, source: dict[str, Any]) -> str:
    first = err.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
    if not loc:  # a model-level check: its message is already complete
        return str(first["msg"]).removeprefix("Value error, ")
    keys = set(kebab_keys(model))  # a union's error adds the member type (`int`) after the key
    key = next((part for part in reversed(loc) if part in keys), loc[-1])
    received = first.get("input", source.get(key))
    return invalid_value(key, _expected(model, key, first), received)


def _expected(model: type[Settings], key: str, error: Any) -> str:
    field = model.model_fields.get(key.replace("-", "_"))
    annotation = field.annotation if field is not None else None
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    noun = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation,  # type: ignore[arg-type]
        "a number" if set(typing.get_args(annotation)) == {int, float} else "a valid value",
    )
    bounds = []
    for item in field.metadata if field is not None else []:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{sign} {getattr(item, attr)}")
    return f"{noun} {' and '.join(bounds)}".strip()
