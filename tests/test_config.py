"""Bench-file validation: every mistake names file, key, value and expectation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from labctl.config import DEFAULT_CONFIG, FOUNDATION_CONFIG, ConfigError, load_bench

GOOD = """
[bench]
name = "test bench"
seed = 3

[instruments.laser1]
class = "laser"
model = "santec_tsl570"
resource = "sim"
timeout_s = 1.5
limits = { power_mw = [0.04, 5.0], wavelength_nm = [1500.0, 1600.0] }
ramps = { power_mw = 2.0 }
safe_start = { emission = false, power_mw = 1.0 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_bench(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message


def test_good_file_loads(tmp_path):
    config = load_bench(write(tmp_path, GOOD))
    laser = config.instruments["laser1"]
    assert config.name == "test bench" and config.seed == 3
    assert laser.limits == {"power_mw": (0.04, 5.0), "wavelength_nm": (1500.0, 1600.0)}
    assert laser.ramps == {"power_mw": 2.0}
    assert laser.timeout_s == 1.5 and laser.simulated


def test_shipped_benches_load():
    config = load_bench(FOUNDATION_CONFIG)
    classes = {i.instrument_class for i in config.instruments.values()}
    assert classes == {"laser", "awg", "scope", "tdc", "tec"}
    default = load_bench()
    assert default.path == DEFAULT_CONFIG and default.isaqn is not None
    assert [n.name for n in default.isaqn.nodes] == ["node1", "node2", "node3"]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such bench file"):
        load_bench(tmp_path / "nope.toml")


def test_invalid_toml_names_the_line(tmp_path):
    message = error_for(tmp_path, "[bench\nname = 1\n")
    assert "not valid TOML" in message and "line 1" in message


def test_missing_bench_section(tmp_path):
    message = error_for(tmp_path, GOOD.replace('[bench]\nname = "test bench"\nseed = 3\n', ""))
    assert "bench: missing; expected a table" in message


def test_missing_required_instrument_key(tmp_path):
    message = error_for(tmp_path, GOOD.replace('resource = "sim"\n', ""))
    assert "instruments.laser1.resource: missing; expected a string" in message


def test_wrong_type(tmp_path):
    message = error_for(tmp_path, GOOD.replace("timeout_s = 1.5", 'timeout_s = "fast"'))
    assert "instruments.laser1.timeout_s: got 'fast', expected a number" in message


def test_negative_timeout(tmp_path):
    message = error_for(tmp_path, GOOD.replace("timeout_s = 1.5", "timeout_s = -1"))
    assert "instruments.laser1.timeout_s: got -1, expected a number > 0" in message


def test_unknown_instrument_class(tmp_path):
    message = error_for(tmp_path, GOOD.replace('class = "laser"', 'class = "lazer"'))
    assert "instruments.laser1.class: got 'lazer', expected one of laser, awg" in message


def test_model_of_wrong_class(tmp_path):
    message = error_for(tmp_path, GOOD.replace("santec_tsl570", "arroyo_5300"))
    assert "instruments.laser1.model: got 'arroyo_5300', expected a laser model" in message


def test_limit_outside_model_range(tmp_path):
    message = error_for(tmp_path, GOOD.replace("power_mw = [0.04, 5.0]", "power_mw = [0.04, 50]"))
    assert "instruments.laser1.limits.power_mw: got [0.04, 50]" in message
    assert "within the model's [0.04, 20] mW" in message


def test_limit_reversed(tmp_path):
    message = error_for(tmp_path, GOOD.replace("power_mw = [0.04, 5.0]", "power_mw = [5.0, 1.0]"))
    assert "instruments.laser1.limits.power_mw: got [5.0, 1.0], expected min <= max" in message


def test_limit_on_unknown_setting(tmp_path):
    message = error_for(tmp_path, GOOD.replace("power_mw = [0.04, 5.0]", "powr_mw = [0, 1]"))
    assert "instruments.laser1.limits.powr_mw" in message
    assert "a numeric setting of santec_tsl570" in message and "power_mw" in message


def test_ramp_on_non_rampable_setting(tmp_path):
    message = error_for(
        tmp_path, GOOD.replace("ramps = { power_mw = 2.0 }", "ramps = { emission = 1 }")
    )
    assert "instruments.laser1.ramps.emission" in message and "rampable" in message


def test_ramp_rate_must_be_positive(tmp_path):
    message = error_for(
        tmp_path, GOOD.replace("ramps = { power_mw = 2.0 }", "ramps = { power_mw = 0 }")
    )
    assert "instruments.laser1.ramps.power_mw: got 0, expected a number > 0" in message


def test_safe_start_outside_bench_limits(tmp_path):
    message = error_for(tmp_path, GOOD.replace("power_mw = 1.0 }", "power_mw = 8.0 }"))
    assert "instruments.laser1.safe_start.power_mw: got 8.0" in message
    assert "within [0.04, 5] mW" in message


def test_safe_start_wrong_type(tmp_path):
    message = error_for(tmp_path, GOOD.replace("emission = false", 'emission = "yes"'))
    assert "instruments.laser1.safe_start.emission: got 'yes', expected a boolean" in message


def test_unknown_keys_are_refused(tmp_path):
    message = error_for(tmp_path, GOOD.replace("timeout_s = 1.5", "timeout = 1.5"))
    assert "instruments.laser1.timeout: unknown key; expected one of" in message
    message = error_for(tmp_path, GOOD + "\n[instrumentz]\n")
    assert "instrumentz: unknown key" in message


def test_wiring_to_undeclared_instrument(tmp_path):
    text = GOOD.replace("seed = 3", 'seed = 3\nwiring = { "scope1:1" = "awg9:1" }')
    message = error_for(tmp_path, text)
    assert "bench.wiring.scope1:1" in message and "declared instrument" in message


def test_bad_port_syntax(tmp_path):
    text = GOOD.replace("seed = 3", 'seed = 3\nwiring = { "laser1:1" = "laser1" }')
    message = error_for(tmp_path, text)
    assert 'port "NAME:CHANNEL"' in message


def test_empty_instruments(tmp_path):
    message = error_for(tmp_path, '[bench]\nname = "x"\n[instruments]\n')
    assert "instruments: empty" in message
