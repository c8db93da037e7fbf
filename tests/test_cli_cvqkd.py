"""Tests of the ``labctl calc cv-skr`` glue (labctl.calc_cvqkd) on a parser built in the test."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import pytest
from calc_cli import run_calc, run_calc_json, run_calc_usage_error

from dsp import cvqkd
from labctl.cli import build_parser

REF_T = 10.0 ** (-0.2 * 10.0 / 10.0) / 8.0


def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_calc("cv-skr", argv, capsys)


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return run_calc_json("cv-skr", argv, capsys)


def test_defaults_are_the_physics_reference_point(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json([], capsys)
    assert out["va_snu"] == 12.0
    assert out["eta"] == 0.42
    assert out["v_el_snu"] == 0.18
    assert out["beta"] == 0.98
    assert out["xi_snu"] == 0.005
    assert out["symbol_rate_hz"] == 50e6
    assert out["channel"] == "geometry"
    assert (out["length_km"], out["alpha_db_per_km"], out["n_nodes"]) == (10.0, 0.2, 8)
    assert out["transmittance"] == pytest.approx(REF_T, rel=1e-15)
    assert out["channel_loss_db"] == pytest.approx(2.0 + 10 * math.log10(8), rel=1e-12)
    k = cvqkd.key_rate_bits_per_symbol(12.0, REF_T, 0.005, 0.42, 0.18, 0.98)
    assert out["bits_per_symbol"] == pytest.approx(k, rel=1e-15)
    assert out["bits_per_symbol"] == pytest.approx(0.0140084125377822, rel=1e-9)
    assert out["skr_bps"] == pytest.approx(50e6 * k, rel=1e-15)
    assert out["secure"] is True
    assert out["zero_key_length_km"] is None  # no crossing within 100 dB of loss
    assert out["zero_key_search_max_km"] == pytest.approx(cvqkd.zero_key_search_limit_km(0.2, 8))
    assert "warning" not in out


def test_direct_transmittance_matches_dsp(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--transmittance", "0.3", "--va-snu", "8", "--eta", "0.6", "--vel", "0.05"]
    argv += ["--beta", "0.95", "--xi-snu", "0.02", "--rate-hz", "1e8"]
    out = _run_json(argv, capsys)
    terms = cvqkd.key_rate_terms(8.0, 0.3, 0.02, 0.6, 0.05, 0.95)
    assert out["channel"] == "transmittance"
    assert out["length_km"] is None and out["n_nodes"] is None
    assert out["transmittance"] == 0.3
    assert out["bits_per_symbol"] == pytest.approx(terms.key_rate_bits_per_symbol, rel=1e-15)
    assert out["mutual_information_bits"] == pytest.approx(terms.mutual_information_bits)
    assert out["holevo_bound_bits"] == pytest.approx(terms.holevo_bound_bits)
    assert out["skr_bps"] == pytest.approx(1e8 * terms.key_rate_bits_per_symbol, rel=1e-15)
    assert "zero_key_length_km" not in out


def test_partial_geometry_uses_reference_values(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json(["--length-km", "25", "--nodes", "3", "--xi-snu", "0.05"], capsys)
    t = cvqkd.channel_transmittance(25.0, 0.2, 3)
    assert out["alpha_db_per_km"] == 0.2
    assert out["transmittance"] == pytest.approx(t, rel=1e-15)
    k = cvqkd.key_rate_bits_per_symbol(12.0, t, 0.05, 0.42, 0.18, 0.98)
    assert out["bits_per_symbol"] == pytest.approx(k, rel=1e-15)
    zero = cvqkd.zero_key_length_km(12.0, 0.05, 0.42, 0.18, 0.98, 0.2, 3)
    assert zero is not None and zero > 25.0
    assert out["zero_key_length_km"] == pytest.approx(zero)


def test_negative_key_is_reported_with_warning(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json(["--xi-snu", "0.3"], capsys)
    assert out["bits_per_symbol"] < 0  # returned as is, not clipped
    assert out["skr_bps"] < 0
    assert out["secure"] is False
    assert out["zero_key_length_km"] == 0.0
    assert "no secret key" in out["warning"]


def test_human_readable_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--xi-snu", "0.05"], capsys)
    assert code == 0
    assert err == ""
    assert "key rate K = 0.00" in out
    assert "SKR =" in out
    assert "key vanishes beyond L = 157.45 km" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_help_states_reference_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["calc", "cv-skr", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "physics.md reference parameters" in text
    for snippet in ("eta 0.42", "v_el 0.18", "beta 0.98", "V_A 12", "R 50 MHz", "alpha 0.2"):
        assert snippet in text
    assert "L 10 km, N 8, xi 5 mSNU" in text


@pytest.mark.parametrize(
    ("argv", "option", "allowed"),
    [
        (["--eta", "0"], "--eta", "(0, 1]"),
        (["--eta", "1.5"], "--eta", "(0, 1]"),
        (["--beta", "nan"], "--beta", "(0, 1]"),
        (["--vel", "-0.1"], "--vel", "[0, 1000]"),
        (["--xi-snu", "-0.001"], "--xi-snu", "[0, 1000]"),
        (["--va-snu", "0"], "--va-snu", "(0, 1e+06]"),
        (["--rate-hz", "-5"], "--rate-hz", "(0, inf)"),
        (["--transmittance", "0"], "--transmittance", "[1e-10, 1]"),
        (["--transmittance", "1.2"], "--transmittance", "[1e-10, 1]"),
        (["--length-km", "-1"], "--length-km", "[0, inf)"),
        (["--alpha-db-km", "inf"], "--alpha-db-km", "[0, inf)"),
        (["--nodes", "0"], "--nodes", ">= 1"),
        (["--length-km", "600"], "--length-km", "[0, 100] dB"),
        (["--transmittance", "0.1", "--nodes", "4"], "--transmittance", "--nodes"),
        (
            ["--transmittance", "0.1", "--length-km", "5", "--alpha-db-km", "0.3"],
            "--transmittance",
            "--length-km, --alpha-db-km",
        ),
        (["--eta", "1e-300"], "key-rate formula", "eta=1e-300"),
    ],
)
def test_invalid_values_give_one_error_line(
    argv: list[str], option: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_calc_usage_error("cv-skr", argv, capsys)
    assert option in line
    assert allowed in line


def test_non_numeric_value_is_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["calc", "cv-skr", "--nodes", "2.5"])
    assert exc.value.code == 2
    assert "--nodes" in capsys.readouterr().err
