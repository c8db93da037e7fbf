"""`labctl bench record`: both writers store the same rows; the report is consistent.

No timing is checked: the figures must be positive and follow from the measured times as the
module doc defines them; the files are read back independently with h5py and compared with
the generated data.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl import bench_record as br
from labctl.config import CONFIG_DIR, load_bench
from labctl.entangle_record import READ_DTYPE, TAG_DTYPE
from labctl.h5read import open_recording

ISAQN = load_bench(CONFIG_DIR / "isaqn_sim.toml")
ENT = load_bench(CONFIG_DIR / "entanglement_sim.toml")


def _tiny(bench: str, units: int = 3, **kwargs) -> br.RawData:
    if bench == "isaqn":
        return br.isaqn_data(ISAQN, units, **kwargs)
    return br.entanglement_data(ENT, units, rate_hz=2e5, **kwargs)


def _decoded(arr: np.ndarray) -> list:
    """Rows as nested Python values, text as str (h5py may return bytes)."""

    def fix(x):
        if isinstance(x, bytes):
            return x.decode()
        if isinstance(x, np.ndarray):
            return [fix(v) for v in x.tolist()] if x.dtype.kind == "O" else x.tolist()
        if isinstance(x, list | tuple):
            return [fix(v) for v in x]
        return x

    return [fix(r) for r in arr.tolist()]


@pytest.mark.parametrize("bench", ["isaqn", "entanglement"])
def test_both_writers_store_exactly_the_generated_rows(bench: str, tmp_path: Path) -> None:
    data = _tiny(bench, seed=5)
    rec = br.write_with_recorder(data, tmp_path / "rec.h5")
    plain = br.write_with_h5py(data, tmp_path / "plain.h5")
    assert rec.payload_bytes == plain.payload_bytes == data.payload_bytes
    assert rec.extra["bytes_appended"] == data.payload_bytes
    assert rec.extra["overruns"] == rec.extra["rows_lost"] == 0
    with h5py.File(tmp_path / "rec.h5", "r") as fr, h5py.File(tmp_path / "plain.h5", "r") as fp:
        for k, t in enumerate(data.tables):
            a, b = fr[t.path], fp[t.path]
            # the same datasets: dtype, chunks, maxshape, filters
            assert (a.dtype, a.chunks, a.maxshape, a.compression) == (
                b.dtype,
                b.chunks,
                b.maxshape,
                b.compression,
            )
            want = np.concatenate([rows for j, rows in data.items if j == k])
            assert _decoded(a[()]) == _decoded(b[()]) == _decoded(want)
    assert br.compare_files(data, tmp_path / "rec.h5", tmp_path / "plain.h5") == []


def test_isaqn_data_follows_the_runs_record_order() -> None:
    iq = ISAQN.isaqn
    cal = iq.calibration_records
    data = br.isaqn_data(ISAQN, 2 * cal + 2, seed=2)
    info = np.concatenate([rows for k, rows in data.items if data.tables[k].path.endswith("info")])
    codes = [rows for k, rows in data.items if data.tables[k].path.endswith("codes")]
    assert [str(x) for x in info["kind"]] == ["electronic"] * cal + ["shot"] * cal + ["data"] * 2
    assert np.array_equal(info["index"], np.arange(2 * cal + 2))
    assert all(c.shape == (1, 2, iq.record_length) and c.dtype == np.int16 for c in codes)
    # shot noise above the electronic noise (the calibration needs it), codes within int16
    rms = [float(np.std(c)) for c in codes]
    assert min(rms[cal : 2 * cal]) > max(rms[:cal])
    assert data.payload_bytes == sum(data.table_bytes().values())


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    n_reads=st.integers(1, 6),
    rate_hz=st.sampled_from([0.0, 50.0, 2e4, 2e5]),
    read_ms=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_entanglement_reads_index_their_tags_and_round_trip(
    tmp_path: Path, n_reads: int, rate_hz: float, read_ms: int, seed: int
) -> None:
    data = br.entanglement_data(ENT, n_reads, rate_hz=rate_hz, read_s=read_ms / 1e3, seed=seed)
    taggers = list(ENT.entanglement.taggers)
    reads = np.concatenate([r for k, r in data.items if data.tables[k].path == "raw/reads"])
    assert reads.shape == (n_reads, len(taggers)) and reads.dtype == READ_DTYPE
    read_ps = round(read_ms * 1e9)
    times = [r for k, r in data.items if data.tables[k].path == "raw/read_times"]
    if any(t.path == "raw/read_times" for t in data.tables):  # one per read, in time order
        assert len(times) == n_reads and np.all(np.diff(np.concatenate(times)) > 0)
    for j, name in enumerate(taggers):
        batches = [r for k, r in data.items if data.tables[k].path == f"raw/tags/{name}"]
        assert all(b.dtype == TAG_DTYPE and b.size > 0 for b in batches)  # no empty append
        tags = np.concatenate(batches) if batches else np.empty(0, TAG_DTYPE)
        first, n = reads[:, j]["first_tag"], reads[:, j]["n_tags"]
        assert first[0] == 0 and np.array_equal(first[1:], (first + n)[:-1])
        assert first[-1] + n[-1] == tags.size
        inputs = {c.input for c in ENT.entanglement.channels if c.tagger == name}
        assert set(tags["channel"].tolist()) <= inputs
        for r in range(n_reads):  # each read's tags sorted, inside the read, before its horizon
            t = tags["timestamp_ps"][first[r] : first[r] + n[r]]
            assert np.all(np.diff(t) >= 0)
            assert np.all((t >= r * read_ps) & (t < reads[r, j]["horizon_ps"]))
    d = tmp_path / f"{n_reads}-{rate_hz}-{read_ms}-{seed}"
    d.mkdir()
    br.write_with_recorder(data, d / "rec.h5")
    br.write_with_h5py(data, d / "plain.h5")
    assert br.compare_files(data, d / "rec.h5", d / "plain.h5") == []


def test_the_comparison_finds_a_changed_row(tmp_path: Path) -> None:
    data = _tiny("entanglement", seed=9)
    br.write_with_recorder(data, tmp_path / "rec.h5")
    br.write_with_h5py(data, tmp_path / "plain.h5")
    with h5py.File(tmp_path / "plain.h5", "r+") as f:
        row = f["raw/tags/tdc2"][5]
        row["channel"] += 1
        f["raw/tags/tdc2"][5] = row
    problems = br.compare_files(data, tmp_path / "rec.h5", tmp_path / "plain.h5")
    assert len(problems) == 1
    assert "plain file" in problems[0] and "raw/tags/tdc2" in problems[0]


def test_a_small_queue_makes_the_producer_wait_never_refuse(tmp_path: Path) -> None:
    data = _tiny("isaqn", units=6, seed=4)
    largest = max(rows.nbytes for _, rows in data.items)
    run = br.write_with_recorder(data, tmp_path / "rec.h5", queue_max_bytes=largest + 1024)
    assert run.extra["overruns"] == run.extra["rows_lost"] == 0
    assert run.extra["queue_peak_bytes"] <= largest + 1024
    with open_recording(tmp_path / "rec.h5") as rec:
        assert rec.complete and rec.gaps() == []
        assert rec.rows("raw/scope/codes") == 6


def _check_write_figures(w: dict) -> None:
    rec, plain = w["recorder"], w["plain"]
    for f in (rec, plain):
        assert len(f["wall_s"]) == len(f["cpu_s"]) == 2
        assert all(x > 0 for x in f["wall_s"])
        assert f["median_wall_s"] == pytest.approx(float(np.median(f["wall_s"])))
        assert f["mb_per_s"] == pytest.approx(w["payload_bytes"] / f["median_wall_s"] / 1e6)
        assert f["units_per_s"] == pytest.approx(w["units"] / f["median_wall_s"])
    assert w["ratio"] == pytest.approx(rec["mb_per_s"] / plain["mb_per_s"])
    assert w["overhead_pct"] == pytest.approx(
        (rec["median_wall_s"] / plain["median_wall_s"] - 1) * 100
    )
    assert w["target_met"] == (w["overhead_pct"] <= br.TARGET_OVERHEAD_PCT)
    assert w["payload_bytes"] == sum(t["payload_bytes"] for t in w["tables"])
    assert rec["bytes_appended"] == [w["payload_bytes"]] * 2
    assert w["same_payload"] is True
    assert w["identical"] is True and w["problems"] == []
    assert rec["overruns"] == rec["rows_lost"] == 0
    assert 0 <= rec["queue_peak_bytes"] <= rec["queue_max_bytes"]
    assert all(n >= 1 for n in rec["commits"])  # at least the commit at close


def test_run_benchmark_reports_consistent_figures_and_cleans_up(tmp_path: Path) -> None:
    result = br.run_benchmark(mb=1.0, repeat=2, directory=tmp_path, replay=False)
    assert set(result["write"]) == {"isaqn", "entanglement"}
    for bench, w in result["write"].items():
        assert [t["path"].split("/")[0] for t in w["tables"]] == ["raw"] * len(w["tables"])
        assert w["unit"] == ("record" if bench == "isaqn" else "read")
        _check_write_figures(w)
    assert result["target_met"] == all(w["target_met"] for w in result["write"].values())
    assert result["replay"]["done"] is False
    assert list(tmp_path.iterdir()) == []  # every file deleted


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="labctl bench")
    br.add_parser(parser.add_subparsers(dest="bench_command", required=True))
    args = parser.parse_args(["record", *argv])
    return args.func(args)


def test_cli_json_parses_and_the_table_prints(capsys, tmp_path: Path) -> None:
    base = ["--mb", "0.5", "--repeat", "1", "--no-replay", "--bench", "entanglement"]
    assert _cli([*base, "--json", "--dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["write"]) == {"entanglement"}
    assert out["write"]["entanglement"]["identical"] is True
    assert _cli(base) == 0
    text = capsys.readouterr().out
    assert "recorder" in text and "plain h5py" in text and "target <= 10 %" in text
    assert "replay: not measured" in text


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--mb", "0"], "--mb"),
        (["--repeat", "0"], "--repeat"),
        (["--recordings", "0"], "--recordings"),
        (["--replay-files", "/nonexistent/x.h5"], "--replay-files"),
    ],
)
def test_cli_refuses_bad_options(capsys, argv: list[str], word: str) -> None:
    assert _cli(argv) == 2
    assert word in capsys.readouterr().err


def test_replay_figures_from_a_real_recording(tmp_path: Path) -> None:
    """One short ISAQN run recorded by ``labctl run`` (as the benchmark makes them), copied
    to make two files; replayed in this process and on a 1-worker local cluster."""
    made, failures = br.make_recordings("isaqn", 1, tmp_path, duration_s=1.0)
    assert [p.name for p in made] == ["replay-isaqn-0.h5"] and failures == []
    copy = tmp_path / "copy.h5"
    shutil.copy(made[0], copy)
    units, raw, unit = br.recording_size(made[0])
    assert unit == "record" and units >= 10 and raw > 0
    rp = br.measure_replay([made[0], copy], n_workers=1)
    assert rp["done"] and rp["agree"] is True
    assert rp["units"] == 2 * units and rp["raw_bytes"] == 2 * raw
    assert rp["updates"] >= 2
    assert rp["replay_file"]["matches_recorded"] is True
    for key in ("single", "replay_file", "dask"):
        f = rp[key]
        assert f["wall_s"] > 0 and f["cpu_s"] > 0
        assert f["mb_per_s"] == pytest.approx(raw * 2 / f["wall_s"] / 1e6)
        assert f["units_per_s"] == pytest.approx(units * 2 / f["wall_s"])
    assert rp["ratio"] == pytest.approx(rp["dask"]["mb_per_s"] / rp["single"]["mb_per_s"])
    assert rp["cluster_start_s"] > 0 and rp["worker_warmup_s"] > 0


def test_a_failing_labctl_run_is_reported_and_leaves_no_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[isaqn\n", encoding="utf-8")
    with pytest.raises(br.RecordingFailed, match=r"bad\.toml.*exit code 1"):
        br.make_recordings("isaqn", 1, tmp_path, duration_s=1.0, config=bad, retries=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]
