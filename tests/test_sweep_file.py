"""The sweep file: validation with exact messages, grid expansion and run names."""

# ruff: noqa: E501  (tables of exact one-line messages and markdown rows)
from __future__ import annotations

import hashlib
import itertools
import tomllib
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError
from simulations.runner import run_config_with
from simulations.sweep_file import PlannedRun, Sweep, check_runs, expand, load_sweep, parse_sweep
from simulations.sweep_runs import overrides_toml

GOOD = """
hospitals = 10
seeds = [1, 2]
[base]
num-server-rounds = 20
[grid]
strategy = ["fedavg", "krum"]
trim-beta = [0.1, 0.2]
"""


def sweep_of(**document: Any) -> Sweep:
    return parse_sweep({"hospitals": 2, "seeds": [1], **document})


def checked(document: dict[str, Any]) -> list[PlannedRun]:
    runs = expand(parse_sweep(document))
    check_runs(runs, run_config_with)
    return runs


def test_good_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(GOOD, "utf-8")

    sweep = load_sweep(path)

    assert sweep == Sweep(
        hospitals=10,
        seeds=(1, 2),
        base={"num-server-rounds": 20},
        grid={"strategy": ["fedavg", "krum"], "trim-beta": [0.1, 0.2]},
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"seeds": [1]}, "Invalid value for `hospitals`. Expected an integer ≥ 1. Received: None"),
        (
            {"hospitals": 0, "seeds": [1]},
            "Invalid value for `hospitals`. Expected an integer ≥ 1. Received: 0",
        ),
        (
            {"hospitals": True, "seeds": [1]},
            "Invalid value for `hospitals`. Expected an integer ≥ 1. Received: True",
        ),
        (
            {"hospitals": 2.5, "seeds": [1]},
            "Invalid value for `hospitals`. Expected an integer ≥ 1. Received: 2.5",
        ),
        (
            {"hospitals": 2},
            "Invalid value for `seeds`. Expected a non-empty list of integers ≥ 0. Received: None",
        ),
        (
            {"hospitals": 2, "seeds": []},
            "Invalid value for `seeds`. Expected a non-empty list of integers ≥ 0. Received: []",
        ),
        (
            {"hospitals": 2, "seeds": 1},
            "Invalid value for `seeds`. Expected a non-empty list of integers ≥ 0. Received: 1",
        ),
        (
            {"hospitals": 2, "seeds": [1, "2"]},
            "Invalid value for `seeds`. Expected a non-empty list of integers ≥ 0. Received: [1, '2']",
        ),
        (
            {"hospitals": 2, "seeds": [-1]},
            "Invalid value for `seeds`. Expected a non-empty list of integers ≥ 0. Received: [-1]",
        ),
        (
            {"hospitals": 2, "seeds": [1, 1]},
            "Invalid value for `seeds`. Expected distinct seeds. Received: [1, 1]",
        ),
        (
            {"hospitals": 2, "seeds": [1], "strategy": "krum"},
            "Unknown sweep key `strategy`. Expected `hospitals`, `seeds`, `[base]` and `[grid]` at the top level (run-config values go in `[base]` or `[grid]`).",
        ),
        (
            {"hospitals": 2, "seeds": [1], "base": 3},
            "Invalid value for `base`. Expected a table (`[base]`). Received: 3",
        ),
        (
            {"hospitals": 2, "seeds": [1], "grid": {"strategy": "krum"}},
            "Invalid value for `grid.strategy`. Expected a list of values. Received: 'krum'",
        ),
        (
            {"hospitals": 2, "seeds": [1], "grid": {"strategy": []}},
            "Invalid value for `grid.strategy`. Expected a non-empty list of values. Received: []",
        ),
        (
            {"hospitals": 2, "seeds": [1], "grid": {"strategy": ["krum", "krum"]}},
            "Invalid value for `grid.strategy`. Expected distinct values. Received: ['krum', 'krum']",
        ),
        (
            {"hospitals": 2, "seeds": [1], "grid": {"strategy": [["krum"]]}},
            "Invalid value for `grid.strategy`. Expected a list of strings, numbers or booleans. Received: [['krum']]",
        ),
        (
            {"hospitals": 2, "seeds": [1], "base": {"x": {"y": 1}}},
            "Invalid value for `base.x`. Expected a run-config value, not a table. Received: {}",
        ),
        (
            {
                "hospitals": 2,
                "seeds": [1],
                "base": {"strategy": "krum"},
                "grid": {"strategy": ["fedavg"]},
            },
            "`strategy` is in both `[base]` and `[grid]`. Expected each run-config key in one of them.",
        ),
        (
            {"hospitals": 2, "seeds": [1], "base": {"seed": 3}},
            "`base.seed` cannot be set in a sweep file: it is set by the top-level `seeds` list.",
        ),
        (
            {"hospitals": 2, "seeds": [1], "grid": {"run-dir": ["a"]}},
            "`grid.run-dir` cannot be set in a sweep file: it is set by the sweep (one directory per run under --out).",
        ),
        (
            {"hospitals": 2, "seeds": [1], "base": {"resume": True}},
            "`base.resume` cannot be set in a sweep file: it is set by the sweep (a run that did not complete starts again from scratch).",
        ),
    ],
)
def test_bad_file_is_one_line(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sweep(document)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"hospitals": 2, "seeds": [1], "base": {"num-server-round": 3}},
            "Unknown config key `num-server-round`. Expected one of the keys declared in "
            "[tool.flwr.app.config] of pyproject.toml. Did you mean `num-server-rounds`?",
        ),
        (
            {"hospitals": 2, "seeds": [1], "grid": {"stratgy": ["krum"]}},
            "Unknown config key `stratgy`. Expected one of the keys declared in "
            "[tool.flwr.app.config] of pyproject.toml. Did you mean `strategy`?",
        ),
        (
            {"hospitals": 2, "seeds": [1, 2], "grid": {"strategy": ["fedavg", "krumm"]}},
            "Run `strategy=krumm/seed=1`: Invalid value for `strategy`. Expected one of "
            "'fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad', 'fedmedian', "
            "'fedtrimmedavg', 'krum', 'multikrum', 'bulyan', 'centeredclip'. Received: 'krumm'",
        ),
        (
            {"hospitals": 2, "seeds": [1], "base": {"num-server-rounds": 0}},
            "Run `base/seed=1`: Invalid value for `num-server-rounds`. Expected an integer ≥ 1. "
            "Received: 0",
        ),
        (
            {"hospitals": 2, "seeds": [1], "grid": {"strategy": ["a/b", "a_b"]}},
            "Two runs would share the directory `strategy=a_b/seed=1`. Expected grid values "
            "that differ in letters, digits or `._=,+-`.",
        ),
    ],
)
def test_bad_run_config_is_one_line(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        checked(document)

    assert str(caught.value) == message


def test_unreadable_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("hospitals = [", "utf-8")

    with pytest.raises(ConfigError, match=r"^Invalid TOML in .*bad\.toml: "):
        load_sweep(path)


def test_every_combination_times_every_seed_once() -> None:
    grid = {
        "strategy": ["fedavg", "krum", "fedmedian"],
        "trim-beta": [0.1, 0.2],
        "augment": [True, False],
    }
    sweep = parse_sweep(
        {"hospitals": 3, "seeds": [7, 8], "base": {"local-epochs": 1}, "grid": grid}
    )

    runs = expand(sweep)

    expected = [
        (s, t, a, seed)
        for s, t, a in itertools.product(grid["strategy"], grid["trim-beta"], grid["augment"])
        for seed in (7, 8)
    ]
    assert [(*(v for _, v in run.cell), run.seed) for run in runs] == expected
    assert len({run.name for run in runs}) == 3 * 2 * 2 * 2
    assert runs[0].overrides == {
        "local-epochs": 1,
        "strategy": "fedavg",
        "trim-beta": 0.1,
        "augment": True,
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("grid", "name"),
    [
        ({}, "base/seed=1"),
        ({"strategy": ["krum"]}, "strategy=krum/seed=1"),
        ({"strategy": ["krum"], "trim-beta": [0.2]}, "strategy=krum,trim-beta=0.2/seed=1"),
        ({"augment": [True]}, "augment=true/seed=1"),
        ({"data-path": ["/data/x y.npz"]}, "data-path=_data_x_y.npz/seed=1"),
    ],
)
def test_run_names_are_readable_and_filesystem_safe(grid: dict[str, Any], name: str) -> None:
    (run,) = expand(sweep_of(grid=grid))

    assert run.name == name


def test_long_cell_name_is_shortened_with_a_hash() -> None:
    text = "class-names=" + "a" * 200
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]

    (run,) = expand(sweep_of(grid={"class-names": ["a" * 200]}))

    assert run.name == f"{text[:139]}-{digest}/seed=1"
    assert len(run.cell_name) == 150


def test_expansion_is_deterministic() -> None:
    document = tomllib.loads(GOOD)

    first, second = expand(parse_sweep(document)), expand(parse_sweep(document))

    assert (
        [r.name for r in first]
        == [r.name for r in second]
        == [
            "strategy=fedavg,trim-beta=0.1/seed=1",
            "strategy=fedavg,trim-beta=0.1/seed=2",
            "strategy=fedavg,trim-beta=0.2/seed=1",
            "strategy=fedavg,trim-beta=0.2/seed=2",
            "strategy=krum,trim-beta=0.1/seed=1",
            "strategy=krum,trim-beta=0.1/seed=2",
            "strategy=krum,trim-beta=0.2/seed=1",
            "strategy=krum,trim-beta=0.2/seed=2",
        ]
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"strategy": "krum", "trim-beta": 0.2, "seed": 1, "augment": False},
        {"run-dir": '/tmp/a "quoted" \\ dir', "learning-rate": 1e-05, "num-server-rounds": 20},
        {"class-names": "normal,pneumonia,ü"},
    ],
)
def test_overrides_file_reads_back_as_the_same_values(overrides: dict[str, Any]) -> None:
    assert tomllib.loads(overrides_toml(overrides)) == overrides
