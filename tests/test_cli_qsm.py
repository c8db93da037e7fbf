"""Tests of the ``labctl calc qsm`` glue (labctl.calc_qsm) on a parser built in the test."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
from calc_cli import run_calc, run_calc_json, run_calc_usage_error

from dsp import qsm
from labctl.cli import build_parser

N_SIGMA = 4.0


def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_calc("qsm", argv, capsys)


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return run_calc_json("qsm", argv, capsys)


def test_json_closed_forms(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json(
        [
            "--pairs",
            "12",
            "--encoding-probability",
            "0.6",
            "--n-encodings",
            "5",
            "--repetitions",
            "800",
        ],
        capsys,
    )
    assert out["precision_bound"] == pytest.approx(1.0 / (0.6 * 800 * 25))
    assert out["precision_bound_std_rad"] == pytest.approx(math.sqrt(out["precision_bound"]))
    assert out["detection_probability"] == pytest.approx(1.0 - ((3.0 + 0.6) / 4.0) ** 12)
    assert out["standard_quantum_limit"] == pytest.approx(1.0 / (800 * 5))
    assert out["encoding_probability_range"] == {"min_exclusive": 0.2, "max_inclusive": 1.0}
    assert out["quantum_advantage"] is True
    assert "warning" not in out
    assert "simulated_variance" not in out  # no Monte Carlo unless asked


def test_no_quantum_advantage_still_computes_with_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--encoding-probability", "0.25", "--n-encodings", "4", "--repetitions", "100"]
    out = _run_json(argv, capsys)
    assert out["quantum_advantage"] is False
    assert "1/N" in out["warning"]
    assert out["precision_bound"] == pytest.approx(1.0 / (0.25 * 100 * 16))
    assert out["precision_bound"] >= out["standard_quantum_limit"]


def test_monte_carlo_random_phase_matches_headline(capsys: pytest.CaptureFixture[str]) -> None:
    p_e, n_enc, nu, l_touch, trials = 0.5, 4, 2000, 6, 20_000
    out = _run_json(
        [
            "--pairs",
            str(l_touch),
            "--encoding-probability",
            str(p_e),
            "--n-encodings",
            str(n_enc),
            "--repetitions",
            str(nu),
            "--attack",
            "random-phase",
            "--monte-carlo",
            str(trials),
            "--seed",
            "17",
        ],
        capsys,
    )
    headline = 1.0 - ((3.0 + p_e) / 4.0) ** l_touch
    assert out["attack_detection_probability"] == pytest.approx(headline)
    assert out["predicted_detection_rate"] == pytest.approx(headline)
    sigma = math.sqrt(headline * (1 - headline) / trials)
    assert out["simulated_detection_rate_se"] == pytest.approx(sigma, rel=0.05)
    assert abs(out["simulated_detection_rate"] - headline) < N_SIGMA * sigma
    bound = 1.0 / (p_e * nu * n_enc**2)
    assert out["phase_rad"] == pytest.approx(math.pi / (2 * n_enc))
    assert 0 < out["simulated_variance_se"] < 0.05 * bound
    assert abs(out["simulated_variance"] - bound) < N_SIGMA * out["simulated_variance_se"]
    assert out["simulated_variance_over_bound"] == pytest.approx(out["simulated_variance"] / bound)
    assert abs(out["simulated_estimate_mean"] - out["phase_rad"]) < (
        N_SIGMA * out["simulated_estimate_mean_se"]
    )
    assert out["monte_carlo_trials"] == trials
    assert out["seed"] == 17


def test_monte_carlo_intercept_resend_matches_derived_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    p_e, l_touch, trials = 0.3, 4, 20_000
    out = _run_json(
        [
            "--pairs",
            str(l_touch),
            "--encoding-probability",
            str(p_e),
            "--repetitions",
            "50",
            "--attack",
            "intercept-resend",
            "--monte-carlo",
            str(trials),
            "--seed",
            "2",
        ],
        capsys,
    )
    derived = 1.0 - ((5.0 + 3.0 * p_e) / 8.0) ** l_touch
    assert out["attack_detection_probability"] == pytest.approx(derived)
    assert out["attack_per_round_detection_probability"] == pytest.approx(3 * (1 - p_e) / 8)
    assert out["detection_probability"] < derived  # headline is the random-phase rate
    sigma = math.sqrt(derived * (1 - derived) / trials)
    assert abs(out["simulated_detection_rate"] - derived) < N_SIGMA * sigma


def test_monte_carlo_without_attack_never_detects(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json(["--monte-carlo", "500", "--seed", "1"], capsys)
    assert out["simulated_detection_rate"] == 0.0
    assert out["simulated_detection_rate_se"] == 0.0
    assert out["predicted_detection_rate"] == 0.0


def test_noise_raises_predicted_abort_rate(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--repetitions", "20", "--monte-carlo", "4000", "--seed", "3"]
    out = _run_json([*argv, "--noise-dephasing", "0.05"], capsys)
    cfg = qsm.QSMConfig(
        n_pairs=20,
        p_encode=0.5,
        n_encodings=4,
        phases_rad=math.pi / 8,
        p_dephasing=0.05,
    )
    expected = qsm.predicted_detection_probability(cfg)
    assert 0.0 < expected < 1.0
    assert out["predicted_detection_rate"] == pytest.approx(expected)
    sigma = math.sqrt(expected * (1 - expected) / 4000)
    assert abs(out["simulated_detection_rate"] - expected) < N_SIGMA * sigma
    assert out["noise_check_error_rates"]["verify_z"] == 0.0  # dephasing never flips z
    assert out["noise_check_error_rates"]["verify_x"] == pytest.approx(0.025)
    assert out["noise_visibility"] == pytest.approx(0.95**2)
    noisier = _run_json(
        [*argv, "--noise-dephasing", "0.05", "--noise-depolarising", "0.05"], capsys
    )
    assert noisier["predicted_detection_rate"] > expected


def test_multiparty_json(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json(
        [
            "--parties",
            "3",
            "--n-encodings",
            "2",
            "--repetitions",
            "4000",
            "--monte-carlo",
            "4000",
            "--seed",
            "5",
        ],
        capsys,
    )
    assert out["parties"] == 3
    assert out["phases_rad"] == pytest.approx([math.pi / 12] * 3)
    bound = 1.0 / (0.5 * 4000 * 4)
    assert out["precision_bound"] == pytest.approx(bound)
    assert out["independent_links_sum_variance"] == pytest.approx(3 * bound)
    assert abs(out["simulated_variance"] - bound) < N_SIGMA * out["simulated_variance_se"]


def test_seed_makes_output_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--monte-carlo", "300", "--seed", "99", "--attack", "random-phase"]
    assert _run_json(argv, capsys) == _run_json(argv, capsys)


@pytest.mark.parametrize(
    ("argv", "option", "allowed"),
    [
        (["--encoding-probability", "1.5"], "--encoding-probability", "(0, 1]"),
        (["--encoding-probability", "0"], "--encoding-probability", "(0, 1]"),
        (["--encoding-probability", "nan"], "--encoding-probability", "(0, 1]"),
        (["--pairs", "0"], "--pairs", ">= 1"),
        (["--n-encodings", "-2"], "--n-encodings", ">= 1"),
        (["--repetitions", "0"], "--repetitions", ">= 1"),
        (["--monte-carlo", "0"], "--monte-carlo", ">= 1"),
        (["--parties", "0"], "--parties", "[1, 8]"),
        (["--seed", "-3"], "--seed", "non-negative"),
        (["--noise-dephasing", "1.2"], "--noise-dephasing", "[0, 1]"),
        (["--noise-depolarising", "-0.1"], "--noise-depolarising", "[0, 1]"),
        (["--n-encodings", "4", "--phase-rad", "1.0"], "--phase-rad", "[0, pi/N]"),
        (
            [
                "--pairs",
                "50",
                "--repetitions",
                "10",
                "--attack",
                "random-phase",
                "--monte-carlo",
                "5",
            ],
            "--pairs",
            "--repetitions=10",
        ),
    ],
)
def test_invalid_values_give_one_error_line(
    argv: list[str], option: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_calc_usage_error("qsm", argv, capsys)
    assert option in line
    assert allowed in line


def test_unknown_attack_is_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["calc", "qsm", "--attack", "mitm"])
    assert exc.value.code == 2
    assert "--attack" in capsys.readouterr().err


def test_plot_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "tradeoff.png"
    out = _run_json(["--n-encodings", "4", "--plot", str(target)], capsys)
    assert out["plot"] == str(target)
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_plot_to_missing_directory_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["--plot", str(tmp_path / "missing" / "x.png")], capsys)
    assert code == 1
    assert out == ""
    assert "--plot" in err
    assert len(err.strip().splitlines()) == 1


def test_human_readable_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        ["--encoding-probability", "0.1", "--n-encodings", "4", "--monte-carlo", "200"], capsys
    )
    assert code == 0
    assert err == ""
    assert "precision bound" in out
    assert "detection probability" in out
    assert "Monte Carlo" in out
    assert "warning" in out  # P_E = 0.1 <= 1/N = 0.25
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
