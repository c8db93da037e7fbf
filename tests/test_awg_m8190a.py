"""Keysight M8190A driver against its simulator over a real TCP socket.

Protocol (settings, segments in both data widths, granularity, catalog, run
control, error queue, refusals before any byte is sent), the simulated
output (band-limited reconstruction of the selected segment) and a scope
wired to it, at the ISAQN reference rates (carriers 100-300 MHz).
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.errors import InstrumentCommandError, LimitViolation
from drivers.keysight_m8190a import DATA_WIDTHS, KeysightM8190A, dac_words
from drivers.sim import dac
from drivers.sim.host import SimSpec
from drivers.transport import resource_manager

SPEED_RATE = 12e9
PRECISION_RATE = 7.2e9
CARRIER_HZ = 200e6


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench([SimSpec("awg1", "keysight_m8190a")], clock=manual_clock)


@pytest.fixture
def sim(bench):
    return bench.sims["awg1"]


@pytest.fixture
def awg(bench, connect):
    return connect(bench, "awg1")


def sine(n: int, samples_per_period: int, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * np.arange(n) / samples_per_period + phase)


def framing_samples(width: str, n: int) -> np.ndarray:
    """A sine whose words hold 0x0A and 0x0D bytes, the last byte of the block being 0x0D."""
    w = DATA_WIDTHS[width]
    samples = 0.5 * sine(n, 64 if width == "speed" else 48)
    # DAC values whose (little-endian) high byte is LF or CR
    lf, cr = (0x0A00 >> w.shift), (0x0D00 >> w.shift)
    samples[:3] = np.array([lf, cr, -lf]) / w.full_scale
    samples[-1] = cr / w.full_scale
    return samples


def test_connect_reads_data_widths_levels_and_clock(awg, sim):
    assert awg.identity.startswith("Keysight Technologies,M8190A,")
    assert list(sim.received) == [
        b"*IDN?",
        b":TRAC1:DWID?",
        b":VOLT1?",
        b":VOLT1:OFFS?",
        b":TRAC2:DWID?",
        b":VOLT2?",
        b":VOLT2:OFFS?",
        b":FREQ:RAST?",
    ]
    assert awg.cache[("arb_sample_rate_hz", 2)] == 7.2e9
    assert awg.query(":SYST:ERR?") == '+0,"No error"'
    assert awg.query("*OPT?") == "02G,12G,14B,SEQ"


@pytest.mark.parametrize(
    ("name", "channel", "value", "wire", "truth"),
    [
        ("function", 2, "STS", b":FUNC2:MODE STS", lambda s: s.channels[2].function),
        ("amplitude_vpp", 2, 0.625, b":VOLT2 0.625", lambda s: s.channels[2].amplitude_v),
        ("offset_v", 1, -0.015, b":VOLT1:OFFS -0.015", lambda s: s.channels[1].offset_v),
        ("output", 2, True, b":OUTP2:NORM 1", lambda s: s.channels[2].output),
        ("arb_sample_rate_hz", 1, 10e9, b":FREQ:RAST 1e+10", lambda s: s.sample_rate),
        ("data_width", 2, "precision", b":TRAC2:DWID WPR", lambda s: s.channels[2].mode),
    ],
)
def test_setting_round_trips(awg, sim, name, channel, value, wire, truth):
    awg.set(name, value, channel)
    assert wire in sim.received
    assert truth(sim) == {"precision": "WPR"}.get(value, value)
    awg.cache.clear()
    assert awg.get(name, channel) == value


def test_sample_clock_is_common_to_both_channels(awg, sim):
    awg.arb_sample_rate_hz[2] = 5e9
    assert sim.sample_rate == 5e9
    assert awg.cache[("arb_sample_rate_hz", 1)] == 5e9
    assert awg.arb_sample_rate_hz[1] == 5e9


@pytest.mark.parametrize(
    ("width", "n", "rate"), [("speed", 960, SPEED_RATE), ("precision", 720, PRECISION_RATE)]
)
def test_upload_in_either_data_width_holds_exact_words(awg, sim, width, n, rate):
    if width == "precision":
        awg.data_width[2] = "precision"
    samples = framing_samples(width, n)
    sim.received.clear()
    awg.upload_arb(2, "carrier", samples, rate)

    words = dac_words(samples, width)
    payload = words.astype("<i2").tobytes()
    assert b"\n" in payload and payload.endswith(b"\r")  # framing must not cut or strip
    length = str(len(payload))
    header = f"#{len(length)}{length}".encode()
    messages = list(sim.received)
    upload = b":TRAC2:DATA 1,0," + header + payload
    assert upload in messages
    assert messages.index(f":TRAC2:DEF 1,{n}".encode()) < messages.index(upload)
    assert messages.index(upload) < messages.index(b':TRAC2:NAME 1,"carrier"')
    assert messages[-6:] == [
        b":TRAC2:SEL 1",
        b":SYST:ERR?",
        b":FUNC2:MODE ARB",
        b":SYST:ERR?",
        f":FREQ:RAST {rate:.10g}".encode(),
        b":SYST:ERR?",
    ]

    ch = sim.channels[2]
    stored = sim.snapshot()["channels"][2]["segments"][1]
    np.testing.assert_array_equal(stored["words"], words)
    assert stored["name"] == "carrier" and stored["length"] == n
    shift = DATA_WIDTHS[width].shift
    np.testing.assert_array_equal(
        np.right_shift(stored["words"], shift),
        np.rint(samples * DATA_WIDTHS[width].full_scale),
    )
    assert (ch.function, ch.selected, sim.sample_rate) == ("ARB", 1, rate)
    assert awg.segment_catalog(2) == {1: n} and awg.arb_name[2] == "carrier"
    assert sim.channels[1].segments == {}


def test_dac_words_put_the_value_in_the_upper_bits():
    x = np.array([-1.0, -0.5, 0.0, 1e-6, 0.5, 1.0])
    assert dac_words(x, "speed").tolist() == [v << 4 for v in (-2047, -1024, 0, 0, 1024, 2047)]
    assert dac_words(x, "precision").tolist() == [v << 2 for v in (-8191, -4096, 0, 0, 4096, 8191)]
    assert dac_words(x, "speed").dtype == np.int16


def test_segments_by_name_catalog_and_delete(awg, sim):
    assert awg.query(":TRAC1:CAT?") == "0,0" and awg.segment_catalog(1) == {}
    awg.upload_arb(1, "i_drive", sine(640, 64), SPEED_RATE)
    awg.upload_arb(1, "pzt", np.linspace(-1, 1, 320), SPEED_RATE)
    assert awg.query(":TRAC1:CAT?") == "1,640,2,320"
    assert awg.segment_names(1) == {1: "i_drive", 2: "pzt"}
    assert awg.arb_name[1] == "pzt" and sim.channels[1].selected == 2

    awg.upload_arb(1, "i_drive", -sine(960, 64), SPEED_RATE)  # replaced in place
    assert awg.segment_catalog(1) == {1: 960, 2: 320}
    np.testing.assert_array_equal(
        sim.channels[1].segments[1].words(), dac_words(-sine(960, 64), "speed")
    )
    awg.select_arb(1, "pzt")
    awg.select_arb(1, "i_drive")
    assert sim.channels[1].selected == 1 and awg.selected_segment[1] == 1

    awg.write_segment(1, 7, np.zeros(384), name="spare")
    assert awg.segment_catalog(1) == {1: 960, 2: 320, 7: 384}
    awg.delete_segment(1, 2)
    assert awg.segment_names(1) == {1: "i_drive", 7: "spare"}
    with pytest.raises(LimitViolation, match=r"arb_name.*\['i_drive', 'spare'\]"):
        awg.select_arb(1, "pzt")
    awg.delete_all_segments(1)
    assert awg.segment_catalog(1) == {}
    assert awg.query(":TRAC1:DEF:NEW? 384") == "1" and awg.query(":TRAC1:DEF:NEW? 320") == "2"
    assert awg.segment_catalog(1) == {1: 384, 2: 320}


def test_out_of_range_values_are_refused_before_sending(awg, sim):
    awg.data_width[2] = "precision"
    awg.arb_sample_rate_hz[1] = 8e9
    before = list(sim.received)
    refusals = [
        (lambda: awg.set("amplitude_vpp", 0.8, 1), "amplitude_vpp"),
        (lambda: awg.set("amplitude_vpp", 0.3, 2), "amplitude_vpp"),
        (lambda: awg.set("offset_v", 0.05, 1), "offset_v"),
        (lambda: awg.set("amplitude_vpp", 0.5, 3), "channel"),
        (lambda: awg.set("arb_sample_rate_hz", 13e9, 1), "arb_sample_rate_hz"),
        (lambda: awg.set("arb_sample_rate_hz", 100e6, 1), "arb_sample_rate_hz"),
        # channel 2 is in precision mode: the common clock stops at 8 GSa/s, on either channel
        (lambda: awg.set("arb_sample_rate_hz", 9e9, 1), "arb_sample_rate_hz"),
        (lambda: awg.set("data_width", "INTX3", 1), "data_width"),
        (lambda: awg.set("function", "SIN", 1), "function"),
        (lambda: awg.set("selected_segment", 0, 1), "selected_segment"),
        (lambda: awg.upload_arb(1, "ok", np.zeros(321), 8e9), "arb length"),  # speed: 64
        (lambda: awg.upload_arb(1, "ok", np.zeros(256), 8e9), "arb length"),  # < 5 vectors
        (lambda: awg.upload_arb(2, "ok", np.zeros(320), 8e9), "arb length"),  # precision: 48
        (lambda: awg.upload_arb(2, "ok", np.zeros(192), 8e9), "arb length"),  # < 240
        (lambda: awg.upload_arb(1, "ok", np.zeros(640), 10e9), "arb_sample_rate_hz"),
        (lambda: awg.upload_arb(1, "ok", np.full(640, 1.001), 8e9), "arb samples"),
        (lambda: awg.upload_arb(1, "1bad", np.zeros(640), 8e9), "arb_name"),
        (lambda: awg.upload_arb(3, "ok", np.zeros(640), 8e9), "channel"),
        (lambda: awg.write_segment(1, 0, np.zeros(640)), "segment id"),
        (lambda: awg.write_segment(1, 2, np.zeros(600)), "arb length"),
        (lambda: awg.select_arb(1, "bad name"), "arb_name"),
        (lambda: awg.delete_segment(1, 600_000), "segment id"),
    ]
    for action, setting in refusals:
        with pytest.raises(LimitViolation, match=setting):
            action()
    assert list(sim.received) == before


def test_precision_mode_and_a_fast_clock_exclude_each_other(awg, sim):
    awg.arb_sample_rate_hz[1] = 12e9
    with pytest.raises(LimitViolation, match=r"precision mode up to 8e\+09 Sa/s"):
        awg.data_width[1] = "precision"
    awg.arb_sample_rate_hz[1] = 8e9
    awg.data_width[1] = "precision"
    assert awg.max_sample_rate_hz() == 8e9
    # the instrument refuses the same, whatever sends it
    with pytest.raises(InstrumentCommandError, match="precision mode") as info:
        awg.write(":FREQ:RAST 9e9")
    assert info.value.code == -221 and sim.sample_rate == 8e9
    awg.data_width[1] = "speed"
    awg.arb_sample_rate_hz[2] = 12e9


def refused(awg, cases: list[tuple[str, int, str]]) -> None:
    for command, code, text in cases:
        with pytest.raises(InstrumentCommandError, match=text) as info:
            awg.write(command)
        assert info.value.code == code, command


def test_instrument_granularity_and_segment_errors(awg, sim):
    refused(
        awg,
        [
            (":TRAC1:DEF 1,321", -222, "multiple of 64"),
            (":TRAC1:DEF 1,256", -222, "at least 320"),
            (":TRAC1:DEF 0,320", -222, "segment id 0"),
            (":TRAC1:DATA 1,0,0", -224, "segment 1 undefined"),
            (":TRAC1:SEL 3", -224, "segment 3 undefined"),
        ],
    )
    awg.write(":TRAC1:DEF 1,320,16")
    awg.write(":TRAC2:DWID WPR")
    refused(
        awg,
        [
            (":TRAC2:DEF 1,320", -222, "multiple of 48"),
            (":TRAC1:DEF 1,640", -224, "already defined"),
            (":TRAC1:DATA 1,32,0,0", -222, "multiple of 64"),
            (":TRAC1:DATA 1,0," + ",".join(["0"] * 321), -223, "Too much data"),
            (":TRAC1:DATA 1,0,40000", -222, "-32768..32767"),
            (":TRAC1:DWID INTX3", -221, "not simulated"),
        ],
    )
    with pytest.raises(InstrumentCommandError, match="Block data error"):
        awg.write_block(":TRAC1:DATA 1,0,", np.zeros(9, dtype=np.int8), big_endian=False)
    awg.write(":TRAC2:DEF 1,480")
    awg.write(":TRAC2:DATA 1,432," + ",".join(["4"] * 48))  # the last vector, as a list
    words = sim.channels[2].segments[1].words()
    assert words[:432].tolist() == [0] * 432 and words[432:].tolist() == [4] * 48
    assert sim.channels[1].segments[1].words().tolist() == [16] * 320  # the init value

    awg.write(":TRAC1:SEL 1;:INIT:IMM1")
    for command in (":TRAC1:DEF 2,320", ":TRAC1:DEL 1", ":TRAC1:DEL:ALL", ":TRAC1:DWID WPR"):
        with pytest.raises(InstrumentCommandError, match="while the channel runs") as info:
            awg.write(command)
        assert info.value.code == -221
    assert awg.is_running(1) and not awg.is_running(2)
    awg.stop(1)
    awg.write(":TRAC1:DEL 1")
    with pytest.raises(InstrumentCommandError, match="selected segment 1 undefined"):
        awg.start(1)


def test_error_queue_reads_in_order_and_clears(awg, sim):
    awg.write(":TRAC1:DEF 1,100", check_errors=False)
    awg.write(":NOSUCH 1", check_errors=False)
    assert awg.query(":SYST:ERR?").startswith('-222,"Data out of range;segment length 100')
    assert awg.query(":SYST:ERR?") == '-113,"Undefined header;:NOSUCH"'
    assert awg.query(":SYST:ERR?") == '+0,"No error"'
    awg.write(":VOLT1 2", check_errors=False)
    awg.write("*CLS")
    assert awg.read_errors() == []
    assert sim.channels[1].amplitude_v == 0.5


def test_output_on_starts_generation_and_upload_keeps_it_running(awg, sim):
    awg.upload_arb(1, "a", sine(640, 64), SPEED_RATE)
    assert not sim.channels[1].running and not sim.channels[1].output
    awg.output_on(1)
    assert sim.channels[1].running and sim.channels[1].output
    assert awg.query(":STAT:OPER:RUN:COND?") == "1"
    sim.received.clear()
    awg.upload_arb(1, "b", sine(640, 32), SPEED_RATE)  # stopped for the upload, restarted
    sent = list(sim.received)
    assert sent.index(b":ABOR1") < sent.index(b":TRAC1:DEF 2,640") < sent.index(b":INIT:IMM1")
    assert sim.channels[1].running and sim.channels[1].selected == 2
    awg.output_off(1)
    assert sim.channels[1].running and not sim.channels[1].output


def test_output_v_is_the_band_limited_segment(bench, awg, sim):
    n, period = 960, int(SPEED_RATE / CARRIER_HZ)  # 200 MHz at 12 GSa/s: 16 periods
    samples = sine(n, period)
    awg.upload_arb(1, "carrier", samples, SPEED_RATE)
    awg.amplitude_vpp[1] = 0.5
    awg.offset_v[1] = 0.01
    wired_t = 2.5e-3 + np.arange(4000) / 41e9  # off the sample grid, 2.5 ms into the run
    assert np.all(sim.output_v(1, wired_t) == 0.0)  # relay off, generation stopped
    awg.output_on(1)

    volts = bench.bench.instruments["awg1"].output_v(1, wired_t)
    codes = np.right_shift(dac_words(samples, "speed"), 4) / 2047
    expected = 0.01 + 0.25 * dac.band_limited(codes, SPEED_RATE, wired_t)
    np.testing.assert_allclose(volts, expected, rtol=0, atol=1e-12)
    analytic = 0.01 + 0.25 * np.sin(2 * np.pi * CARRIER_HZ * wired_t)
    assert np.max(np.abs(volts - analytic)) < 0.25 * 1e-3  # 12-bit, flat filter
    on_grid = np.arange(n) / SPEED_RATE
    np.testing.assert_allclose(sim.output_v(1, on_grid), 0.01 + 0.25 * codes, atol=1e-12)

    awg.stop(1)
    assert np.all(sim.output_v(1, wired_t) == 0.0)


def test_third_party_raw_download_sequence(bench, sim):
    """The IQtools download sequence as a plain pyvisa script sends it, then our driver."""
    codes = (np.rint(8191 * sine(480, 48)) * 4).astype(np.int16)
    inst = resource_manager().open_resource(
        bench.resources["awg1"], read_termination="\n", write_termination="\n", timeout=2000
    )
    try:
        for command in (":abort1", ":trac1:dwid wprecision", ":freq:rast 8e9", ":trac1:del 1"):
            inst.write(command)
        assert inst.query(":syst:err?").startswith('-224,"Illegal parameter value;segment 1')
        inst.write(":trac1:def 1,480")
        inst.write_binary_values(":trac1:data 1,0,", codes, datatype="h", is_big_endian=False)
        for command in (":trac1:sel 1", ":volt1 0.7", ":outp1 on", ":init:imm1"):
            inst.write(command)
        assert inst.query(":syst:err?") == '+0,"No error"'
        assert inst.query(":stat:oper:run:cond?") == "1"
        assert inst.query(":trac1:cat?") == "1,480"
        assert inst.query(":trac1:dwid?") == "WPR"
        assert inst.query(":freq:rast?") == "+8.00000000E+09"
    finally:
        inst.close()
    np.testing.assert_array_equal(sim.channels[1].segments[1].words(), codes)

    driver = KeysightM8190A("awg1", bench.resources["awg1"], timeout_s=0.5)
    driver.connect()
    try:
        assert driver.data_width[1] == "precision" and driver.arb_name[1] == ""
        assert driver.output[1] is True and driver.is_running(1)
        assert driver.amplitude_vpp[1] == 0.7
    finally:
        driver.close(safe=False)


def test_close_turns_outputs_off_and_stops(bench, sim):
    driver = KeysightM8190A("awg1", bench.resources["awg1"], timeout_s=0.5)
    driver.connect()
    for channel in (1, 2):
        driver.upload_arb(channel, "x", sine(640, 64), SPEED_RATE)
        driver.output_on(channel)
    assert sim.engine.execute(b":STAT:OPER:RUN:COND?") == ["3"]
    driver.close()
    assert [(ch.output, ch.running) for ch in sim.channels.values()] == [(False, False)] * 2


@pytest.fixture
def scoped(sim_bench, manual_clock):
    return sim_bench(
        [
            SimSpec("awg1", "keysight_m8190a"),
            SimSpec("scope1", "keysight_infiniium", {"noise_v": 1e-3, "adc_bits": 10}),
        ],
        clock=manual_clock,
        wiring={"scope1:1": "awg1:1", "scope1:2": "awg1:2"},
    )


def test_scope_sees_the_i_and_q_drive(scoped, connect, manual_clock):
    """One node's I and Q carriers at 200 MHz (14-bit, 7.2 GSa/s) on a 10 GSa/s scope."""
    awg = connect(scoped, "awg1")
    scope = connect(scoped, "scope1")
    period = int(PRECISION_RATE / CARRIER_HZ)  # 36 samples
    for channel in (1, 2):
        awg.data_width[channel] = "precision"
    awg.upload_arb(1, "i_node1", sine(720, period, np.pi / 2), PRECISION_RATE)
    awg.upload_arb(2, "q_node1", sine(720, period), PRECISION_RATE)
    for channel in (1, 2):
        awg.amplitude_vpp[channel] = 0.7
        awg.output_on(channel)
        scope.channel_scale_v_per_div[channel] = 0.1  # +-0.4 V
    scope.sample_rate_hz = 10e9
    scope.record_length = 2000

    t_start_s = manual_clock.now_s()
    records = scope.acquire([1, 2])
    t = t_start_s + np.arange(2000) / 10e9
    w = 2 * np.pi * CARRIER_HZ * t
    design = np.column_stack([np.cos(w), np.sin(w), np.ones_like(t)])
    fits = {ch: np.linalg.lstsq(design, records[ch].volts, rcond=None)[0] for ch in (1, 2)}
    (ci, si, oi), (cq, sq, oq) = fits[1], fits[2]
    assert np.hypot(ci, si) == pytest.approx(0.35, abs=3e-3)
    assert np.hypot(cq, sq) == pytest.approx(0.35, abs=3e-3)
    assert abs(si) < 3e-3 and abs(cq) < 3e-3  # I is the cosine, Q the sine: in quadrature
    assert abs(oi) < 2e-3 and abs(oq) < 2e-3
    residual = records[1].volts - design @ fits[1]
    assert float(np.std(residual)) < 2e-3

    awg.output_off(2)
    assert float(scope.acquire([2])[2].volts.std()) < 2e-3
