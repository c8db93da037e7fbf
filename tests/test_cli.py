"""The labctl command line: sim, instruments, run, and its error reporting."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drivers.santec import SantecTSL570
from labctl.cli import main
from labctl.config import FOUNDATION_CONFIG
from labctl.h5read import open_recording

LASER_BENCH = """
[bench]
name = "cli bench"

[instruments.laser1]
class = "laser"
model = "santec_tsl570"
resource = "{resource}"
timeout_s = 1.0
limits = {{ power_mw = [0.04, 5.0] }}
safe_start = {{ emission = false, power_mw = 0.5, wavelength_nm = 1550.12 }}
"""


def bench_file(tmp_path: Path, resource: str = "sim") -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(LASER_BENCH.format(resource=resource)))
    return path


def test_sim_subprocess_prints_resources_and_serves_them(tmp_path):
    """`labctl sim --json` in its own process; a driver in this one talks to it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl", "sim", "--json", str(bench_file(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        table = json.loads(line)
        assert table == {
            "laser1": {
                "class": "laser",
                "model": "santec_tsl570",
                "resource": table["laser1"]["resource"],
            }
        }
        assert table["laser1"]["resource"].startswith("TCPIP0::127.0.0.1::")
        laser = SantecTSL570("laser1", table["laser1"]["resource"], timeout_s=2.0)
        assert laser.connect().startswith("SANTEC,TSL-570")
        laser.wavelength_nm = 1551.0
        assert laser.wavelength_nm == pytest.approx(1551.0)
        laser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_run_applies_safe_start_and_records_the_settings(tmp_path, capsys):
    out = tmp_path / "run.h5"
    assert main(["run", "--json", str(bench_file(tmp_path)), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    state = summary["instruments"]["laser1"]["state_after_safe_start"]
    assert state["power_mw"] == pytest.approx(0.5)
    assert state["wavelength_nm"] == pytest.approx(1550.12)
    assert state["emission"] is False
    with open_recording(out) as rec:
        assert rec.complete and rec.format.name == "labctl-bench"
        assert "laser1" in rec.static("bench/config")
        (snapshot,) = rec.table("settings/snapshots")
        assert str(snapshot["instrument"]) == "laser1"
        changes = {
            str(c["setting"]): json.loads(str(c["value"])) for c in rec.table("settings/changes")
        }
        assert changes["power_mw"] == pytest.approx(0.5) and changes["emission"] is False
    # recordings are never overwritten: refused before anything is switched on
    assert main(["run", str(bench_file(tmp_path)), "--output", str(out)]) == 1
    assert "exists; recordings are never overwritten" in capsys.readouterr().err


def test_instruments_json(tmp_path, capsys):
    assert main(["instruments", "--json", str(bench_file(tmp_path))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["laser1"]["identity"].startswith("SANTEC,TSL-570")
    assert out["laser1"]["state"]["power_unit"] == "mW"


def test_config_error_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[bench]\nname = "x"\n[instruments.l]\nclass = "laser"\n')
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"labctl: error: {path}: instruments.l.model: missing; expected a string"


def test_unreachable_instrument_is_one_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = bench_file(tmp_path, f"TCPIP0::127.0.0.1::{port}::SOCKET")
    assert main(["instruments", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("labctl: error: laser1: connection failed")
    assert "Traceback" not in "\n".join(err)


def _sim_table(*config: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "labctl", "sim", "--json", "--duration-s", "0.2", *config],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[0])


def test_default_bench_is_the_isaqn_network():
    table = _sim_table()
    assert set(table) == {"laser1", "awg1", "awg2", "awg3", "awg4", "scope1"}
    assert table["scope1"]["model"] == "keysight_infiniium"


def test_foundation_bench_sim_lists_every_instrument():
    table = _sim_table(str(FOUNDATION_CONFIG))
    assert {v["class"] for v in table.values()} == {"laser", "awg", "scope", "tdc", "tec"}
    tec = next(v for v in table.values() if v["class"] == "tec")
    assert tec["resource"].startswith("ASRL/dev/pts/")
