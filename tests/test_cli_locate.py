"""Tests of the ``labctl calc locate`` glue (labctl.calc_locate) on a parser built in the test."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import pytest
from calc_cli import run_calc, run_calc_json, run_calc_usage_error

from dsp import locate
from labctl import calc_locate
from labctl.cli import build_parser

SPEED_M_S = 6e3
NODES_M = 10e3 * np.array(
    [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in (90.0, 210.0, 330.0)]
)


def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_calc("locate", argv, capsys)


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return run_calc_json("locate", argv, capsys)


def _node_flags(nodes_m: np.ndarray = NODES_M) -> list[str]:
    # "=" form: a value starting with "-" would otherwise be taken for an option
    return [f"--node={x!r},{y!r}" for x, y in nodes_m.tolist()]


def _arrival_flags(
    source_m: tuple[float, float],
    nodes_m: np.ndarray = NODES_M,
    fibres_m: list[float] | None = None,
    t0_s: float = 0.25,
) -> list[str]:
    dist = np.hypot(*(nodes_m - np.asarray(source_m)).T)
    arrivals = t0_s + dist / SPEED_M_S
    if fibres_m is not None:
        arrivals = arrivals + np.asarray(fibres_m) * 1.468 / locate.SPEED_OF_LIGHT_M_S
    return [f"--arrival-s={t!r}" for t in arrivals.tolist()]


def test_registers_locate_with_run_locate() -> None:
    args = _parser().parse_args(["calc", "locate", "--speed-m-s", "6000"])
    assert args.func is calc_locate.run_locate
    assert args.calc_command == "locate"
    assert args.fibre_index == "1.468"


def test_json_reference_geometry(capsys: pytest.CaptureFixture[str]) -> None:
    source = (2e3, 1e3)
    out = _run_json([*_node_flags(), *_arrival_flags(source), "--speed-m-s", "6000"], capsys)
    assert out["x_m"] == pytest.approx(source[0], abs=1e-4)
    assert out["y_m"] == pytest.approx(source[1], abs=1e-4)
    assert out["t0_s"] == pytest.approx(0.25, abs=1e-9)
    assert out["rms_residual_s"] < 1e-12
    assert len(out["residuals_s"]) == 3 and len(out["distances_m"]) == 3
    assert out["ambiguous"] is False and out["alternatives"] == []
    assert out["n_nodes"] == 3 and out["speed_m_s"] == 6000.0 and out["fibre_index"] == 1.468
    assert out["fibre_m"] is None and out["fibre_delays_s"] == [0.0, 0.0, 0.0]
    assert "sigma_x_m" not in out and "covariance" not in out


def test_json_unequal_fibres_and_uncertainty(capsys: pytest.CaptureFixture[str]) -> None:
    source = (-3e3, -4e3)
    fibres = [10e3, 12e3, 25e3]
    argv = [
        *_node_flags(),
        *_arrival_flags(source, fibres_m=fibres),
        *[f"--fibre-m={f!r}" for f in fibres],
        "--speed-m-s=6000",
        "--timing-sigma-s=1e-3",
    ]
    out = _run_json(argv, capsys)
    assert math.hypot(out["x_m"] - source[0], out["y_m"] - source[1]) < 1e-4
    assert out["fibre_m"] == fibres
    assert out["fibre_delays_s"][2] == pytest.approx(25e3 * 1.468 / 299_792_458.0)
    assert out["timing_sigma_s"] == 1e-3
    # 1 ms of timing at 6 km/s: metres of position uncertainty
    assert 1.0 < out["sigma_x_m"] < 50.0 and 1.0 < out["sigma_y_m"] < 50.0
    cov = np.array(out["covariance"])
    assert cov.shape == (3, 3)
    np.testing.assert_allclose(cov, cov.T, rtol=1e-9)
    assert math.sqrt(cov[0, 0]) == pytest.approx(out["sigma_x_m"])
    # without --fibre-m the fix is biased by the 73 us fibre mismatch (sub-metre)
    argv_no_fibre = [a for a in argv if not a.startswith("--fibre-m")]
    biased = _run_json(argv_no_fibre, capsys)
    assert 0.1 < math.hypot(biased["x_m"] - source[0], biased["y_m"] - source[1]) < 1.0


def test_json_ambiguous_three_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    source = (0.0, 15e3)
    out = _run_json([*_node_flags(), *_arrival_flags(source), "--speed-m-s", "6000"], capsys)
    assert out["ambiguous"] is True
    candidates = [out, *out["alternatives"]]
    assert len(candidates) == 2
    errors = [math.hypot(c["x_m"] - source[0], c["y_m"] - source[1]) for c in candidates]
    assert min(errors) < 1e-4
    assert all(c["rms_residual_s"] < 1e-12 for c in candidates)


def test_json_four_nodes_overdetermined(capsys: pytest.CaptureFixture[str]) -> None:
    nodes4 = np.vstack([NODES_M, [[-6e3, 14e3]]])
    source = (0.0, 15e3)
    out = _run_json(
        [*_node_flags(nodes4), *_arrival_flags(source, nodes4), "--speed-m-s", "6000"], capsys
    )
    assert out["n_nodes"] == 4 and out["ambiguous"] is False
    assert math.hypot(out["x_m"] - source[0], out["y_m"] - source[1]) < 1e-4


def test_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        [*_node_flags(), *_arrival_flags((0.0, 15e3)), "--speed-m-s", "6000"], capsys
    )
    assert code == 0 and err == ""
    assert out.startswith("source: x = ")
    assert "ambiguous" in out


_GOOD_NODES = ["--node=0,10000", "--node=-8660.254,-5000", "--node=8660.254,-5000"]
_GOOD_ARRIVALS = ["--arrival-s=1.5", "--arrival-s=2.0", "--arrival-s=1.4"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([*_GOOD_NODES, *_GOOD_ARRIVALS], "--speed-m-s"),
        ([*_GOOD_NODES[:2], *_GOOD_ARRIVALS[:2], "--speed-m-s=6000"], "--node"),
        ([*_GOOD_ARRIVALS, "--speed-m-s=6000"], "--node"),
        (["--node=0;1", *_GOOD_NODES[1:], *_GOOD_ARRIVALS, "--speed-m-s=6000"], "--node"),
        (["--node=0,1,2", *_GOOD_NODES[1:], *_GOOD_ARRIVALS, "--speed-m-s=6000"], "--node"),
        (["--node=a,1", *_GOOD_NODES[1:], *_GOOD_ARRIVALS, "--speed-m-s=6000"], "--node"),
        (["--node=nan,1", *_GOOD_NODES[1:], *_GOOD_ARRIVALS, "--speed-m-s=6000"], "--node"),
        (
            ["--node=0,0", "--node=1,1", "--node=2,2", *_GOOD_ARRIVALS, "--speed-m-s=6000"],
            "--node",
        ),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS[:2], "--speed-m-s=6000"], "--arrival-s"),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS[:2], "--arrival-s=x", "--speed-m-s=6000"], "--arrival-s"),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS[:2], "--arrival-s=inf", "--speed-m-s=6000"], "--arrival-s"),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS, "--speed-m-s=0"], "--speed-m-s"),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS, "--speed-m-s=-6000"], "--speed-m-s"),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS, "--speed-m-s=fast"], "--speed-m-s"),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS, "--speed-m-s=6000", "--fibre-m=1e4"], "--fibre-m"),
        (
            [
                *_GOOD_NODES,
                *_GOOD_ARRIVALS,
                "--speed-m-s=6000",
                "--fibre-m=1e4",
                "--fibre-m=1e4",
                "--fibre-m=-1",
            ],
            "--fibre-m",
        ),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS, "--speed-m-s=6000", "--fibre-index=0.9"], "--fibre-index"),
        ([*_GOOD_NODES, *_GOOD_ARRIVALS, "--speed-m-s=6000", "--fibre-index=x"], "--fibre-index"),
        (
            [*_GOOD_NODES, *_GOOD_ARRIVALS, "--speed-m-s=6000", "--timing-sigma-s=0"],
            "--timing-sigma-s",
        ),
    ],
)
def test_usage_errors(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_calc_usage_error("locate", argv, capsys)
    assert flag in line
