"""The ISAQN HDF5 recorder: round trip, crash safety, refused records, foreign files."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from labctl.isaqn_record import (
    FORMAT_NAME,
    IsaqnRecorder,
    RecordingError,
    read_isaqn_recording,
)
from labctl.isaqn_status import EventLocation, NetworkStatus, NodeStatus

REPO = Path(__file__).resolve().parents[1]
LENGTH = 1000
CONFIG_TEXT = '# bench\nseed = 7\n[isaqn]\nnodes = ["α", "b"]\n'


@dataclass
class Record:
    """Same fields as labctl.isaqn_job.Record (the recorder only reads these attributes)."""

    samples: np.ndarray
    codes_i: np.ndarray
    codes_q: np.ndarray
    volts_per_code: tuple[float, float]
    offset_v: tuple[float, float]
    index: int
    kind: str


def make_record(index: int, kind: str = "data", length: int = LENGTH) -> Record:
    rng = np.random.default_rng(index)
    codes_i = rng.integers(-32768, 32768, length, dtype=np.int16)
    codes_q = rng.integers(-32768, 32768, length, dtype=np.int16)
    vpc = (1.0e-5 * (1 + 0.1 * index), 1.1e-5)
    off = (0.003 * index, -0.002)
    # the scope driver's formula (drivers/scope.py): codes * volts_per_code + offset_v
    samples = (codes_i.astype(np.float64) * vpc[0] + off[0]) + 1j * (
        codes_q.astype(np.float64) * vpc[1] + off[1]
    )
    return Record(samples, codes_i, codes_q, vpc, off, index, kind)


def make_node(name: str, k: int) -> NodeStatus:
    return NodeStatus(
        name=name,
        locked=k % 2 == 0,
        band_power_snu=1.5 + k,
        pilot_power_snu=40.0 + k,
        castdown_db=0.25 * k,
        vibrating=k == 1,
        vibration_freq_hz=math.nan if k != 1 else 123.5,
        pilot_only=False,
        phase_rad=0.1 * k,
        phase_rms_rad=0.01 * (k + 1),
        phase_peak_to_peak_rad=0.05 * (k + 1),
        phase_max_slope_rad_per_s=3.0 * k,
        phase_floor_rad2_per_hz=1e-9 * (k + 1),
        strain_resolution_per_rthz=2e-12 * (k + 1),
        transmittance=0.5 + 0.01 * k,
        transmittance_ci=(0.49 + 0.01 * k, 0.51 + 0.01 * k),
        xi_snu=0.012 + 0.001 * k,
        xi_ci_snu=(math.nan, math.nan) if k == 0 else (0.01, 0.02),
        n_symbols=10_000 * (k + 1),
        v_el_snu=0.05,
        key_rate_bits_per_symbol=math.nan if k == 0 else 0.02 * k,
        skr_bps=math.nan if k == 0 else 2.0e4 * k,
    )


def make_status(k: int, location: bool = False) -> NetworkStatus:
    loc = None
    if location:
        loc = EventLocation(
            t_s=0.5 * k,
            x_m=10.0 + k,
            y_m=-3.0 - k,
            sigma_x_m=0.5,
            sigma_y_m=math.nan,
            rms_residual_s=1e-6 * k,
            nodes=("α", "b", "c"),
            arrival_s=(1.0e-3, 1.5e-3 + k, 2.0e-3),
            ambiguous=k % 2 == 1,
        )
    return NetworkStatus(
        t_s=0.5 * (k + 1),
        records=10 * (k + 1),
        overloads=k,
        nodes=(make_node("α", k), make_node("b", k + 1)),
        location=loc,
        messages=("b: pilot lost", "resync") if k == 1 else (),
    )


def write_run(path: Path, records: list[Record], statuses: list[NetworkStatus]) -> None:
    meta = {"sample_rate_hz": 2.5e9, "record_length": LENGTH, "bench": "isaqn_sim"}
    with IsaqnRecorder(path, CONFIG_TEXT, "/benches/isaqn.toml", meta) as recorder:
        for rec in records:
            recorder.record(rec)
        for st in statuses:
            recorder.status(st)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    kinds = ["electronic", "electronic", "shot", "shot", "data", "data", "data"]
    records = [make_record(k, kind) for k, kind in enumerate(kinds)]
    statuses = [make_status(k, location=k in (1, 2)) for k in range(4)]
    write_run(path, records, statuses)

    with read_isaqn_recording(path) as rec:
        assert rec.complete
        assert rec.format_version == 1
        assert rec.config_text == CONFIG_TEXT
        assert rec.config_path == "/benches/isaqn.toml"
        assert rec.meta == {"sample_rate_hz": 2.5e9, "record_length": LENGTH, "bench": "isaqn_sim"}
        assert rec.created.endswith("+00:00")

        assert rec.n_records == len(records)
        assert rec.record_length == LENGTH
        assert rec.codes.dtype == np.int16
        assert rec.codes.shape == (len(records), 2, LENGTH)
        assert rec.kinds == tuple(kinds)
        np.testing.assert_array_equal(rec.index, np.arange(len(records)))
        np.testing.assert_array_equal(rec.records_of_kind("shot"), [2, 3])
        for k, r in enumerate(records):
            np.testing.assert_array_equal(rec.codes[k, 0], r.codes_i)
            np.testing.assert_array_equal(rec.record_codes(k)[1], r.codes_q)
            assert tuple(rec.volts_per_code[k]) == r.volts_per_code
            assert tuple(rec.offset_v[k]) == r.offset_v
            volts = rec.volts(k)
            assert volts.dtype == np.complex128
            np.testing.assert_array_equal(volts, r.samples)  # bit for bit
        with pytest.raises(IndexError, match="record 7 out of range"):
            rec.volts(7)

        assert rec.n_updates == 4
        np.testing.assert_array_equal(rec.t_s, [s.t_s for s in statuses])
        np.testing.assert_array_equal(rec.records, [s.records for s in statuses])
        np.testing.assert_array_equal(rec.overloads, [s.overloads for s in statuses])
        assert rec.messages == tuple(s.messages for s in statuses)
        assert list(rec.nodes) == ["α", "b"]  # order of the status, not alphabetical
        for j, name in enumerate(["α", "b"]):
            fields = rec.nodes[name]
            expected = [s.nodes[j] for s in statuses]
            assert "name" not in fields
            assert fields["locked"].dtype == np.bool_
            assert fields["n_symbols"].dtype == np.int64
            assert fields["transmittance_ci"].shape == (4, 2)
            for field in ("locked", "vibrating", "pilot_only", "n_symbols"):
                np.testing.assert_array_equal(fields[field], [getattr(n, field) for n in expected])
            for field in (
                "band_power_snu",
                "vibration_freq_hz",
                "strain_resolution_per_rthz",
                "key_rate_bits_per_symbol",
                "skr_bps",
                "phase_max_slope_rad_per_s",
            ):
                assert fields[field].dtype == np.float64
                np.testing.assert_array_equal(fields[field], [getattr(n, field) for n in expected])
            for field in ("transmittance_ci", "xi_ci_snu"):
                np.testing.assert_array_equal(fields[field], [getattr(n, field) for n in expected])

        assert rec.location.shape == (2,)
        for row, nodes, arrival, k in zip(
            rec.location, rec.location_nodes, rec.location_arrival_s, (1, 2), strict=True
        ):
            loc = statuses[k].location
            assert loc is not None
            assert row["status_row"] == k
            for field in ("t_s", "x_m", "y_m", "sigma_x_m", "sigma_y_m", "rms_residual_s"):
                np.testing.assert_array_equal(row[field], getattr(loc, field))
            assert bool(row["ambiguous"]) == loc.ambiguous
            assert nodes == loc.nodes
            np.testing.assert_array_equal(arrival, loc.arrival_s)

    # the layout itself, as another tool would see it
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT_NAME
        assert f.attrs["format_version"] == 1
        assert f.attrs["sample_rate_hz"] == 2.5e9
        codes = f["raw/codes"]
        assert codes.chunks == (1, 2, LENGTH)
        assert codes.maxshape == (None, 2, LENGTH)
        assert h5py.check_enum_dtype(f["raw/kind"].dtype) == {"electronic": 0, "shot": 1, "data": 2}
        assert f["status/nodes/b/transmittance_ci"].dtype == np.float64
        assert f["status/location"].dtype.names[:3] == ("status_row", "t_s", "x_m")


def test_empty_recording_reads(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    write_run(path, [], [])
    with read_isaqn_recording(path) as rec:
        assert rec.n_records == 0 and rec.codes.shape == (0, 2, 0)
        assert rec.n_updates == 0 and rec.nodes == {} and rec.location.shape == (0,)
        with pytest.raises(IndexError):
            rec.volts(0)


def test_node_appearing_later_is_padded(tmp_path: Path) -> None:
    path = tmp_path / "late.h5"
    first = NetworkStatus(t_s=0.1, records=1, overloads=0, nodes=(make_node("a", 0),))
    second = NetworkStatus(
        t_s=0.2, records=2, overloads=0, nodes=(make_node("a", 1), make_node("new", 2))
    )
    write_run(path, [], [first, second])
    with read_isaqn_recording(path) as rec:
        new = rec.nodes["new"]
        assert math.isnan(new["band_power_snu"][0]) and new["band_power_snu"][1] == 3.5
        assert new["n_symbols"].tolist() == [-1, 30_000]
        assert new["locked"].tolist() == [False, True]


def test_killed_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    """A process that dies without closing: every record and status so far is readable."""
    path = tmp_path / "killed.h5"
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        sys.path[:0] = [{str(REPO)!r}, {str(Path(__file__).parent)!r}]
        from test_isaqn_record import make_record, make_status, CONFIG_TEXT
        from labctl.isaqn_record import IsaqnRecorder
        recorder = IsaqnRecorder(Path({str(path)!r}), CONFIG_TEXT, "x.toml", {{"a": 1}})
        for k in range(6):
            recorder.record(make_record(k, "shot" if k < 2 else "data"))
            if k % 2:
                recorder.status(make_status(k // 2, location=k == 3))
        os._exit(1)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr

    with read_isaqn_recording(path) as rec:
        assert not rec.complete
        assert rec.n_records == 6
        assert rec.kinds == ("shot", "shot", "data", "data", "data", "data")
        for k in range(6):
            np.testing.assert_array_equal(rec.volts(k), make_record(k).samples)
        assert rec.n_updates == 3
        np.testing.assert_array_equal(rec.t_s, [0.5, 1.0, 1.5])
        assert rec.location["status_row"].tolist() == [1]
        np.testing.assert_array_equal(rec.nodes["b"]["xi_ci_snu"][1], (0.01, 0.02))


def test_record_of_another_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with IsaqnRecorder(path, CONFIG_TEXT, "x.toml", {}) as recorder:
        recorder.record(make_record(0))
        with pytest.raises(ValueError, match=r"record 1: 999 samples.* 1000 samples"):
            recorder.record(make_record(1, length=LENGTH - 1))
        with pytest.raises(ValueError, match="kind 'dark'"):
            recorder.record(make_record(1, kind="dark"))
        recorder.record(make_record(1))
    with read_isaqn_recording(path) as rec:
        assert rec.n_records == 2 and rec.codes.shape == (2, 2, LENGTH)
        np.testing.assert_array_equal(rec.volts(1), make_record(1).samples)


def test_bad_meta_and_closed_recorder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        IsaqnRecorder(tmp_path / "m.h5", "", "x.toml", {"format": "mine"})
    with pytest.raises(TypeError, match=r"meta\['gain'\]"):
        IsaqnRecorder(tmp_path / "m.h5", "", "x.toml", {"gain": [1, 2]})  # type: ignore[dict-item]
    recorder = IsaqnRecorder(tmp_path / "c.h5", "", "x.toml", {})
    recorder.close()
    recorder.close()
    with pytest.raises(ValueError, match="closed"):
        recorder.record(make_record(0))


def test_foreign_files_are_refused_clearly(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("data", data=np.arange(3))
    with pytest.raises(RecordingError, match=r"other\.h5: not a labctl-isaqn recording"):
        read_isaqn_recording(other)

    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    with pytest.raises(RecordingError, match=r"notes\.txt: cannot be opened as HDF5"):
        read_isaqn_recording(text)

    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        read_isaqn_recording(tmp_path / "missing.h5")

    truncated = tmp_path / "truncated.h5"
    with h5py.File(truncated, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = 1
    with pytest.raises(RecordingError, match=r"truncated\.h5: /config is missing"):
        read_isaqn_recording(truncated)

    newer = tmp_path / "newer.h5"
    with h5py.File(newer, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = 2
    with pytest.raises(RecordingError, match="format version 2 is newer"):
        read_isaqn_recording(newer)
