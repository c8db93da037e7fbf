"""Keysight Infiniium driver against its simulator over a real TCP socket.

The sources feeding the scope are set up directly on the simulated AWG (its
own driver is tested in test_awg_keysight.py and end to end in
test_awg_scope_coupling.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.errors import InstrumentCommandError, LimitViolation
from drivers.keysight_infiniium import (
    AcquisitionMode,
    Coupling,
    InfiniiumPreamble,
    KeysightInfiniium,
    Units,
    WaveformFormat,
    WaveformType,
)
from drivers.sim.host import SimSpec
from drivers.transport import resource_manager

NOISE_V = 1e-3


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench(
        [
            SimSpec("awg1", "keysight_33500b"),
            SimSpec("scope1", "keysight_infiniium", {"noise_v": NOISE_V}),
        ],
        clock=manual_clock,
        wiring={"scope1:1": "awg1:1", "scope1:3": "awg1:2"},
    )


@pytest.fixture
def sim(bench):
    return bench.sims["scope1"]


@pytest.fixture
def scope(bench, connect):
    return connect(bench, "scope1")


def drive(bench, channel: int, function: str, *, vpp: float, offset_v: float, hz: float) -> None:
    """Put a standard waveform on an AWG output (simulator state, not the AWG driver)."""
    ch = bench.sims["awg1"].channels[channel]
    ch.function, ch.amplitude_vpp, ch.offset_v, ch.frequency_hz = function, vpp, offset_v, hz
    ch.output = True


def setup_record(scope, *, rate_hz: float = 1e6, points: int = 2000) -> None:
    scope.sample_rate_hz = rate_hz
    scope.record_length = points


def open_raw(bench):
    return resource_manager().open_resource(
        bench.resources["scope1"], read_termination="\n", write_termination="\n", timeout=2000
    )


def test_connect_turns_headers_off_and_selects_word_blocks(bench, sim, scope):
    assert scope.identity.startswith("KEYSIGHT TECHNOLOGIES,MXR404A,")
    assert list(sim.received)[:3] == [b"*IDN?", b":SYST:HEAD 0", b":SYST:ERR? STR"]
    snap = sim.snapshot()
    assert snap["headers"] is False and snap["format"] == "WORD"
    assert snap["byte_order"] == "little" and snap["streaming"] is False
    assert scope.query(":SYST:ERR? STR") == '0,"No error"'
    assert scope.query(":SYST:ERR?") == "0"  # Infiniium: the number only without STRing


def test_power_on_headers_are_why_the_driver_turns_them_off(bench):
    raw = open_raw(bench)
    try:
        assert raw.query(":CHAN1:SCAL?") == ":CHAN1:SCAL +1.00000000E-01"
        assert raw.query(":SYST:ERR? STRING") == ':SYST:ERR 0,"No error"'
        raw.write(":SYST:HEAD OFF")
        assert raw.query(":CHAN1:SCAL?") == "+1.00000000E-01"
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("name", "channel", "value", "wire", "readback"),
    [
        ("channel_scale_v_per_div", 2, 0.02, b":CHAN2:SCAL 0.02", 0.02),
        ("channel_offset_v", 4, -0.75, b":CHAN4:OFFS -0.75", -0.75),
        ("timebase_scale_s_per_div", None, 2e-7, b":TIM:SCAL 2e-07", 2e-7),
        ("sample_rate_hz", None, 2e8, b":ACQ:SRAT 200000000", 2e8),
        ("sample_rate_hz", None, 3e6, b":ACQ:SRAT 3000000", 4e6),  # rounded up
        ("record_length", None, 12345, b":ACQ:POIN 12345", 12345),
        ("waveform_source", None, 3, b":WAV:SOUR CHAN3", 3),
        ("waveform_format", None, "BYTE", b":WAV:FORM BYTE", "BYTE"),
        ("waveform_byte_order", None, "big", b":WAV:BYT MSBF", "big"),
    ],
)
def test_setting_round_trips(sim, scope, name, channel, value, wire, readback):
    scope.set(name, value, channel)
    assert wire in sim.received
    scope.cache.clear()
    assert scope.get(name, channel) == readback


def test_out_of_range_and_bad_channel_lists_are_refused_before_sending(sim, scope):
    before = list(sim.received)
    for action, what in [
        (lambda: scope.set("channel_scale_v_per_div", 2.0, 1), "channel_scale_v_per_div"),
        (lambda: scope.set("channel_offset_v", 0.0, 5), "channel"),
        (lambda: scope.set("sample_rate_hz", 20e9), "sample_rate_hz"),
        (lambda: scope.set("record_length", 10), "record_length"),
        (lambda: scope.set("waveform_format", "ASCII"), "waveform_format"),
        (lambda: scope.acquire([]), "acquisition channels"),
        (lambda: scope.acquire([1, 1]), "acquisition channels"),
        (lambda: scope.acquire([2, 5]), "acquisition channels"),
        (lambda: scope.clear_protection(0), "protection channel"),
    ]:
        with pytest.raises(LimitViolation, match=what):
            action()
    assert list(sim.received) == before


def test_preamble_has_24_typed_fields(bench, sim, scope):
    setup_record(scope, rate_hz=5e6, points=1000)
    scope.channel_scale_v_per_div[1] = 0.05
    scope.channel_offset_v[1] = 0.1
    scope.acquire([1])
    raw = scope.query(":WAV:PRE?")
    assert len(raw.split(",")) == 24
    pre = scope.preamble()
    assert pre.format is WaveformFormat.WORD and pre.type is WaveformType.RAW
    assert (pre.points, pre.count) == (1000, 1)
    assert pre.x_increment_s == pytest.approx(2e-7, rel=1e-12)
    assert pre.x_origin_s == pytest.approx(-1000 * 2e-7 / 2, rel=1e-12)
    assert pre.y_increment_v == pytest.approx(8 * 0.05 / 65536, rel=1e-12)
    assert pre.y_origin_v == pytest.approx(0.1) and pre.y_reference == 0
    assert pre.coupling is Coupling.DCFIFTY
    assert pre.acquisition_mode is AcquisitionMode.RTIME
    assert (pre.x_units, pre.y_units) == (Units.SECOND, Units.VOLT)
    assert pre.frame_model == "MXR404A:MY59100101" and pre.completion_pct == 100
    assert len(pre.date.split()) == 3 and pre.time.count(":") == 3


def test_preamble_parse_of_a_recorded_reply_and_a_broken_one():
    text = (
        "2,1,16000,1,2.50000E-11,-2.00000E-07,0,6.10370E-06,-1.50000E-02,0,2,4.00000E-07,"
        '-2.00000E-07,3.20000E-01,-1.75000E-01,"15 MAR 2024","10:11:12:13",'
        '"DSO90254A:MY12345678",0,100,2,1,2.50000E+09,0.00000E+00'
    )
    pre = InfiniiumPreamble.parse(text)
    assert pre.points == 16000 and pre.x_increment_s == 2.5e-11
    assert pre.y_origin_v == -0.015 and pre.date == "15 MAR 2024"
    assert pre.frame_model == "DSO90254A:MY12345678"
    assert pre.max_bandwidth_limit_hz == 2.5e9
    assert InfiniiumPreamble.parse(text.replace("2,1,16000", "2,7,16000")).type == 7
    with pytest.raises(ValueError, match="24 preamble fields"):
        InfiniiumPreamble.parse(text.rsplit(",", 1)[0])


@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_multichannel_word_acquisition_in_either_byte_order(bench, connect, byte_order):
    scope = connect(bench, "scope1", byte_order=byte_order)
    sim = bench.sims["scope1"]
    drive(bench, 1, "SQU", vpp=0.6, offset_v=0.1, hz=5e3)
    drive(bench, 2, "SIN", vpp=0.3, offset_v=-0.05, hz=20e3)
    setup_record(scope, rate_hz=1e6, points=2000)
    for ch in (1, 3):
        scope.channel_scale_v_per_div[ch] = 0.1  # +-0.4 V full scale
    records = scope.acquire([1, 3, 2])
    assert set(records) == {1, 2, 3}
    assert b":DIG CHAN1,CHAN3,CHAN2;*OPC?" in sim.received
    t_start, dt, n = sim.last_acquisition
    t_virtual = t_start + np.arange(n) * dt
    awg = bench.sims["awg1"]
    for ch, source in ((1, 1), (3, 2)):
        w = records[ch]
        np.testing.assert_array_equal(w.codes, sim.records[ch].codes)  # exact transfer
        assert w.codes.dtype == np.int16 and w.volts.dtype == np.float64
        assert (w.dt_s, w.n_points) == (pytest.approx(1e-6, rel=1e-12), 2000)
        np.testing.assert_allclose(w.volts, w.codes * w.volts_per_code + w.offset_v)
        truth = awg.output_v(source, t_virtual)
        lsb = sim.volts_per_adc_level(ch)
        assert np.max(np.abs(w.volts - truth)) < lsb / 2 + 6 * NOISE_V
    # channel 2 is unwired: terminated input, noise only
    assert abs(records[2].volts.mean()) < 1e-3 and records[2].volts.std() < 3 * NOISE_V


def test_byte_format_gives_8_bit_codes(bench, sim, scope):
    drive(bench, 1, "SIN", vpp=0.5, offset_v=0.0, hz=10e3)
    setup_record(scope, rate_hz=1e6, points=1000)
    scope.channel_scale_v_per_div[1] = 0.1
    scope.waveform_format = "BYTE"
    w = scope.acquire([1])[1]
    assert w.codes.min() >= -128 and w.codes.max() <= 127
    assert w.volts_per_code == pytest.approx(0.8 / 256)
    t_start, dt, n = sim.last_acquisition
    truth = bench.sims["awg1"].output_v(1, t_start + np.arange(n) * dt)
    assert np.max(np.abs(w.volts - truth)) < 0.8 / 256 / 2 + 6 * NOISE_V
    assert w.volts.max() - w.volts.min() == pytest.approx(0.5, abs=0.02)


def test_consecutive_records_are_contiguous_in_virtual_time(bench, sim, scope, manual_clock):
    drive(bench, 1, "RAMP", vpp=0.6, offset_v=0.0, hz=1e3)
    setup_record(scope, rate_hz=1e6, points=1500)
    scope.channel_scale_v_per_div[1] = 0.1
    manual_clock.advance(0.25)
    first = scope.acquire([1])[1]
    start_1 = sim.last_acquisition[0]
    assert start_1 == pytest.approx(0.25)
    assert manual_clock.now_s() == pytest.approx(0.25 + 1500e-6)  # acquiring takes time
    second = scope.acquire([1])[1]
    assert sim.last_acquisition[0] == pytest.approx(start_1 + 1500e-6, abs=1e-12)
    joined = np.concatenate([first.volts, second.volts])
    truth = bench.sims["awg1"].output_v(1, start_1 + np.arange(3000) * 1e-6)
    assert np.max(np.abs(joined - truth)) < sim.volts_per_adc_level(1) / 2 + 6 * NOISE_V


def test_clipping_trips_protection_until_cleared(bench, sim, scope):
    drive(bench, 1, "SIN", vpp=2.0, offset_v=0.0, hz=10e3)
    setup_record(scope, rate_hz=1e6, points=1000)
    scope.channel_scale_v_per_div[1] = 0.05  # +-0.2 V full scale: a 2 Vpp sine clips
    assert scope.overloaded(1) is False
    w = scope.acquire([1])[1]
    assert scope.overloaded(1) is True and scope.overloaded(2) is False
    lsb = sim.volts_per_adc_level(1)
    assert w.volts.max() == pytest.approx(0.2 - lsb) and w.volts.min() == pytest.approx(-0.2)
    assert np.mean(np.abs(w.volts) >= 0.2 - lsb) > 0.5  # flat-topped most of the time
    scope.clear_protection(1)
    assert scope.overloaded(1) is False
    scope.channel_scale_v_per_div[1] = 0.5
    scope.acquire([1])
    assert scope.overloaded(1) is False


def test_reading_a_channel_that_was_not_acquired_raises_the_instrument_error(sim, scope):
    setup_record(scope, points=100)
    scope.acquire([1])
    scope.waveform_source = 4
    empty = scope.query_block(":WAV:DATA?", datatype="h", big_endian=False)
    assert empty.size == 0
    with pytest.raises(InstrumentCommandError, match="Waveform data is not valid") as info:
        scope.raise_on_errors(":WAV:DATA?")
    assert info.value.code == -230


def test_unwired_source_without_output_is_an_instrument_error(sim_bench, manual_clock):
    host = sim_bench(
        [SimSpec("laser1", "santec_tsl570"), SimSpec("scope1", "keysight_infiniium")],
        clock=manual_clock,
        wiring={"scope1:2": "laser1:1"},
    )
    scope = KeysightInfiniium("scope1", host.resources["scope1"], timeout_s=0.5)
    scope.connect()
    try:
        with pytest.raises(InstrumentCommandError, match="laser1 wired to CHAN2 has no output_v"):
            scope.acquire([2])
    finally:
        scope.close()


def test_third_party_streaming_read_and_keysight_example_sequence(bench, sim):
    drive(bench, 1, "DC", vpp=1.0, offset_v=0.25, hz=1e3)
    raw = open_raw(bench)
    try:
        raw.write(":SYST:HEAD OFF")
        raw.write(":ACQ:SRAT 1e6;:ACQ:POIN 500")
        raw.write(":WAV:FORM WORD;BYT LSBF;STR ON")  # path kept after the first ;
        assert raw.query(":DIGitize CHANnel1;*OPC?") == "1"
        assert raw.query(":ADER?") == "1" and raw.query(":ADER?") == "0"
        raw.write(":WAV:SOUR CHAN1")
        raw.write(":WAV:DATA?")
        streamed = raw.read_raw()
        assert streamed.startswith(b"#0") and streamed.endswith(b"\n")
        codes = np.frombuffer(streamed[2:-1], dtype="<i2")
        assert codes.size == 500
        yinc = float(raw.query(":WAV:YINC?"))
        yorg = float(raw.query(":WAV:YOR?"))
        assert float(np.mean(codes * yinc + yorg)) == pytest.approx(0.25, abs=2e-3)
        raw.write(":WAV:STR OFF;:WAV:FORM ASC")
        volts = np.array(raw.query(":WAV:DATA?").split(","), dtype=np.float64)
        np.testing.assert_allclose(volts, codes * yinc + yorg, rtol=1e-6, atol=1e-9)
        assert raw.query(":SYST:ERR? STR") == '0,"No error"'
    finally:
        raw.close()


def test_eight_bit_adc_is_left_justified_in_words(sim_bench, manual_clock, connect):
    host = sim_bench(
        [
            SimSpec("awg1", "keysight_33500b"),
            SimSpec("scope1", "keysight_infiniium", {"adc_bits": 8, "noise_v": NOISE_V}),
        ],
        clock=manual_clock,
        wiring={"scope1:1": "awg1:1"},
    )
    drive(host, 1, "TRI", vpp=0.7, offset_v=0.0, hz=2e3)
    scope = connect(host, "scope1")
    setup_record(scope, rate_hz=1e6, points=1000)
    scope.channel_scale_v_per_div[1] = 0.1
    w = scope.acquire([1])[1]
    assert np.all(w.codes % 256 == 0)  # 8 significant bits in a 16-bit word
    assert len(np.unique(w.codes)) > 150  # the triangle sweeps most of the 256 levels
    lsb = 0.8 / 256
    assert host.sims["scope1"].volts_per_adc_level(1) == pytest.approx(lsb)
    t_start, dt, n = host.sims["scope1"].last_acquisition
    truth = host.sims["awg1"].output_v(1, t_start + np.arange(n) * dt)
    assert np.max(np.abs(w.volts - truth)) < lsb / 2 + 6 * NOISE_V


# -- :MEASure:VAVerage? (a cheap mean for slow loops) ----------------------------------------
def window_truth(bench, sim, channel: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Sample times of the measurement window ending now, and the wired AWG output there."""
    rate, n = sim.effective_acquisition()
    t_s = bench.bench.clock.now_s() - np.arange(n - 1, -1, -1) / rate
    return t_s, bench.sims["awg1"].output_v(channel, t_s)


def test_mean_voltage_over_the_window_ending_now(bench, sim, scope, manual_clock):
    drive(bench, 1, "SIN", vpp=0.5, offset_v=0.08, hz=1e3)
    setup_record(scope, rate_hz=1e6, points=2500)  # 2.5 periods: the mean is not the offset
    manual_clock.advance(0.3)
    records_before = dict(sim.records)
    sim.received.clear()
    mean_v = scope.mean_voltage_v(1)
    assert list(sim.received) == [b":MEAS:VAV? DISP,CHAN1"]
    assert manual_clock.now_s() == 0.3  # measuring does not move the clock
    assert sim.records == records_before  # nor replace the records
    _, truth = window_truth(bench, sim)
    lsb = sim.volts_per_adc_level(1)
    assert abs(np.mean(truth) - 0.08) > 0.02  # a partial period biases the plain mean
    assert mean_v == pytest.approx(np.mean(truth), abs=lsb / 2 + 5 * NOISE_V / np.sqrt(2500))
    assert scope.overloaded(1) is False

    # CYCLe: whole periods only, so the mean of a sine is its offset
    cycles_v = scope.mean_voltage_v(1, whole_cycles=True)
    assert b":MEAS:VAV? CYCL,CHAN1" in sim.received
    assert cycles_v == pytest.approx(0.08, abs=lsb + 1e-3)

    # a DC level, the default measurement source and headers as a third-party client sees them
    drive(bench, 2, "DC", vpp=1.0, offset_v=-0.15, hz=1e3)  # AWG output 2 feeds CHAN3
    raw = open_raw(bench)
    try:
        raw.write(":SYST:HEAD ON;:MEAS:SOUR CHAN3")
        reply = raw.query(":MEASure:VAVerage?")
        assert reply.startswith(":MEAS:VAV ")
        noise_of_mean = 5 * NOISE_V / np.sqrt(2500)
        assert float(reply.split()[1]) == pytest.approx(-0.15, abs=lsb / 2 + noise_of_mean)
        raw.write(":SYST:HEAD OFF")
        assert raw.query(":MEAS:SOUR?") == "CHAN3"
    finally:
        raw.close()


def test_mean_voltage_out_of_range_trips_protection(bench, sim, scope):
    drive(bench, 1, "DC", vpp=1.0, offset_v=0.6, hz=1e3)
    scope.channel_scale_v_per_div[1] = 0.05  # +-0.2 V: 0.6 V clips
    mean_v = scope.mean_voltage_v(1)
    assert mean_v == pytest.approx(0.2 - sim.volts_per_adc_level(1))  # the clipped level
    assert scope.overloaded(1) is True
    with pytest.raises(LimitViolation, match="measurement channel"):
        scope.mean_voltage_v(5)


def test_mean_voltage_without_a_result_raises_the_instrument_reason(sim_bench, manual_clock):
    host = sim_bench(
        [SimSpec("laser1", "santec_tsl570"), SimSpec("scope1", "keysight_infiniium")],
        clock=manual_clock,
        wiring={"scope1:2": "laser1:1"},
    )
    scope = KeysightInfiniium("scope1", host.resources["scope1"], timeout_s=0.5)
    scope.connect()
    try:
        assert scope.query(":MEAS:VAV? DISP,CHAN2") == "+9.99999000E+37"
        scope.read_errors()
        with pytest.raises(InstrumentCommandError, match="laser1 wired to CHAN2 has no output_v"):
            scope.mean_voltage_v(2)
        assert scope.mean_voltage_v(1) == pytest.approx(0.0, abs=1e-3)  # unwired: 0 V
    finally:
        scope.close()
