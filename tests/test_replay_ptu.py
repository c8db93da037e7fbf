"""Tests of ``labctl replay`` (labctl.replay_ptu) on synthetic PTU files, parser built here."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labctl.ptu import RecordType, encode_t2_records, encode_t3_records, write_ptu
from labctl.replay_cli import add_parser

DELAY_PS = 1_500
JITTER_PS = 50.0
T_PS = 10**12  # 1 s
N_PAIRS = 20_000
N_NOISE = 200_000  # per channel, uniform over T: Poisson singles at 200 kHz
WINDOW_PS = 1_000


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="labctl")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["replay", *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = _run([*argv, "--json"], capsys)
    assert code == 0, err
    assert out.count("\n") == 1
    return json.loads(out)


@pytest.fixture(scope="module")
def t2_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """HydraHarp V2 T2 (1 ps): channel 1 and 2 share N_PAIRS pairs at +1500 ps (50 ps rms)."""
    rng = np.random.default_rng(7)
    pair_t = rng.integers(0, T_PS - 10_000, N_PAIRS)
    partner = pair_t + DELAY_PS + np.rint(rng.normal(0.0, JITTER_PS, N_PAIRS)).astype(np.int64)
    t1 = np.concatenate([pair_t, rng.integers(0, T_PS, N_NOISE)])
    t2 = np.concatenate([partner, rng.integers(0, T_PS, N_NOISE)])
    t = np.concatenate([t1, t2])
    ch = np.concatenate([np.ones(t1.size, np.uint8), np.full(t2.size, 2, np.uint8)])
    order = np.argsort(t, kind="stable")
    rec = encode_t2_records(t[order], ch[order], RecordType.HYDRAHARP_V2_T2)
    path = tmp_path_factory.mktemp("ptu") / "pairs_t2.ptu"
    write_ptu(path, rec, record_type=RecordType.HYDRAHARP_V2_T2, global_resolution_s=1e-12)
    return path, {"n1": int(t1.size), "n2": int(t2.size), "n_records": int(rec.size)}


def test_t2_singles_delay_coincidences_car(
    t2_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, truth = t2_file
    out = _run_json([str(path)], capsys)
    for key in (
        "file",
        "record_type",
        "mode",
        "n_records",
        "n_tags",
        "duration_s",
        "singles",
        "histogram",
        "pairs",
        "warnings",
        "not_reported",
    ):
        assert key in out
    assert out["file"] == str(path)
    assert out["mode"] == "T2" and out["record_type"] == "HYDRAHARP_V2_T2"
    assert out["n_records"] == truth["n_records"]
    assert out["n_tags"] == truth["n1"] + truth["n2"]
    assert out["duration_s"] == pytest.approx(1.0, abs=1e-4)
    singles = {s["channel"]: s for s in out["singles"]}
    assert set(singles) == {1, 2}
    assert singles[1]["counts"] == truth["n1"]  # exact
    assert singles[2]["counts"] == truth["n2"]
    assert singles[1]["rate_hz"] == pytest.approx(truth["n1"] / out["duration_s"])
    # default bin: 1 ps resolution -> 10 ps; window 1000 ps is 100 whole bins
    assert out["histogram"] == {
        "bin_ps": 10,
        "range_ps": 20_000,
        "n_bins": 4000,
        "window_ps": WINDOW_PS,
    }

    (pair,) = out["pairs"]
    assert (pair["a"], pair["b"]) == (1, 2)
    assert pair["peak_found"] is True
    assert abs(pair["delay_ps"] - DELAY_PS) <= out["histogram"]["bin_ps"]
    assert pair["window_hi_ps"] - pair["window_lo_ps"] == WINDOW_PS

    # closed form: accidentals A = R1 R2 w T with R = (N_PAIRS + N_NOISE) / T
    r = (N_PAIRS + N_NOISE) / (T_PS * 1e-12)
    acc = r * r * WINDOW_PS * 1e-12 * 1.0  # 48.4
    # the +-500 ps window holds all pairs (10 sigma); the accidentals in it are Poisson(acc)
    assert abs(pair["coincidences"] - N_PAIRS - acc) < 5 * math.sqrt(acc)
    assert pair["accidentals_singles"] == pytest.approx(acc, rel=0.01)  # N1 N2 exact, T ~ 1 s
    # ~35 off-peak windows of Poisson(48.4): relative error ~2.4 %, 4 sigma
    assert pair["offpeak_method"] == "tiled"
    assert pair["offpeak_windows"] >= 30
    assert pair["accidentals_offpeak"] == pytest.approx(acc, rel=0.10)
    car_expected = 1.0 + N_PAIRS / acc  # 414
    # CAR from singles: fluctuation sqrt(acc)/N_PAIRS ~ 0.04 %; 1 % leaves margin for T != 1 s
    assert pair["car_singles"] == pytest.approx(car_expected, rel=0.01)
    assert pair["car"] == pytest.approx(car_expected, rel=0.10)
    assert pair["car_err"] > 0 and pair["note"] is None


def test_batch_invariance_t2(
    t2_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = t2_file
    big = _run_json([str(path), "--batch-records", str(1 << 22)], capsys)
    small = _run_json([str(path), "--batch-records", "4099"], capsys)
    assert small == big


def _t3_file(path: Path) -> int:
    """HydraHarp V2 T3, 80 MHz sync, 1 ps bins: pairs within one sync period at +1500 ps."""
    rng = np.random.default_rng(3)
    n_sync = 2_000_000
    n_pairs, n_noise = 3_000, 3_000
    s_pair = rng.integers(0, n_sync, n_pairs)
    d1 = rng.integers(0, 10_000, n_pairs)
    d2 = d1 + DELAY_PS + np.rint(rng.normal(0.0, JITTER_PS, n_pairs)).astype(np.int64)
    sync = np.concatenate([s_pair, s_pair, rng.integers(0, n_sync, 2 * n_noise)])
    dtime = np.concatenate([d1, d2, rng.integers(0, 12_500, 2 * n_noise)])
    ch = np.concatenate(
        [np.ones(n_pairs), np.full(n_pairs, 2), rng.integers(1, 3, 2 * n_noise)]
    ).astype(np.uint8)
    # shuffle, then order by sync only: photons of one sync period are not time-sorted
    perm = rng.permutation(sync.size)
    sync, dtime, ch = sync[perm], dtime[perm], ch[perm]
    order = np.argsort(sync, kind="stable")
    rec = encode_t3_records(sync[order], dtime[order], ch[order], RecordType.HYDRAHARP_V2_T3)
    write_ptu(
        path,
        rec,
        record_type=RecordType.HYDRAHARP_V2_T3,
        global_resolution_s=12.5e-9,
        resolution_s=1e-12,
    )
    return n_pairs


def test_t3_reordering_and_batch_invariance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pairs_t3.ptu"
    n_pairs = _t3_file(path)
    big = _run_json([str(path)], capsys)
    tiny = _run_json([str(path), "--batch-records", "7"], capsys)
    assert tiny == big
    assert big["mode"] == "T3" and big["sync_period_ps"] == pytest.approx(12_500)
    (pair,) = big["pairs"]
    assert abs(pair["delay_ps"] - DELAY_PS) <= big["histogram"]["bin_ps"]
    assert pair["offpeak_method"] == "sidepeaks"  # +-1 sync period fits in +-20 ns
    assert abs(pair["coincidences"] - n_pairs) < 5 * math.sqrt(n_pairs)


def test_pair_option_and_text_output(
    t2_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = t2_file
    out = _run_json([str(path), "--pair", "2,1", "--pair", "1,3"], capsys)
    p21, p13 = out["pairs"]
    assert (p21["a"], p21["b"]) == (2, 1)
    assert abs(p21["delay_ps"] + DELAY_PS) <= out["histogram"]["bin_ps"]
    assert p13["delay_ps"] is None and p13["car"] is None
    assert p13["note"] == "no photons on channel 3"
    code, text, err = _run([str(path), "--window-ps", "2000", "--bin-ps", "20"], capsys)
    assert code == 0 and err == ""
    assert "1->2: delay" in text and "CAR" in text and "not reported" in text


def test_single_channel_no_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "one.ptu"
    t = np.arange(0, 10_000_000, 1000, dtype=np.int64)
    rec = encode_t2_records(t, np.ones(t.size, np.uint8), RecordType.HYDRAHARP_V2_T2)
    write_ptu(path, rec, record_type=RecordType.HYDRAHARP_V2_T2, global_resolution_s=1e-12)
    out = _run_json([str(path)], capsys)
    assert out["pairs"] == [] and out["singles"][0]["counts"] == t.size


def test_truncated_file_is_one_line_error(
    t2_file: tuple[Path, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _ = t2_file
    path = tmp_path / "cut.ptu"
    data = src.read_bytes()
    path.write_bytes(data[: len(data) - 1001])
    code, out, err = _run([str(path), "--json"], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and str(path) in err and "truncated" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content", [b"not a ptu file at all", None])
def test_bad_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    path = tmp_path / "bad.ptu"
    if content is not None:
        path.write_bytes(content)
    code, out, err = _run([str(path)], capsys)
    assert code == 1 and out == ""
    assert err.startswith("labctl replay: error: ") and str(path) in err
    assert err.count("\n") == 1


def test_usage_errors(
    t2_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = t2_file
    code, _, err = _run([str(path), "--bin-ps", "0"], capsys)
    assert code == 2 and "--bin-ps" in err
    code, _, err = _run([str(path), "--window-ps", "15000"], capsys)
    assert code == 2 and "--window-ps" in err


def test_labctl_replay_through_the_cli(
    t2_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    from labctl.cli import main

    path, _ = t2_file
    assert main(["replay", str(path), "--json", "--pair", "1,2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [(1, 2)]
    assert main(["replay", str(path.with_name("missing.ptu"))]) == 1
    assert "missing.ptu" in capsys.readouterr().err
