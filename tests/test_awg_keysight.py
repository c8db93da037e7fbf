"""Keysight 33500B driver against its simulator over a real TCP socket."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.errors import InstrumentCommandError, LimitViolation
from drivers.keysight_33500b import Keysight33500B, dac_codes
from drivers.sim.faults import Fault
from drivers.sim.host import SimSpec
from drivers.transport import resource_manager


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench([SimSpec("awg1", "keysight_33500b")], clock=manual_clock)


@pytest.fixture
def sim(bench):
    return bench.sims["awg1"]


@pytest.fixture
def awg(bench, connect):
    return connect(bench, "awg1")


def newline_rich_samples() -> np.ndarray:
    """Samples whose int16 codes hold 0x0A bytes in both byte orders and end in 0x0D."""
    codes = np.array(
        [0, 0x0A0A, -0x0A0A, 0x0A00, 0x000A, 32767, -32767, 0x0D0A, 0x0A0D, 1, -1, 0x0D0D],
        dtype=np.int16,
    )
    return codes.astype(np.float64) / 32767.0


def test_connect_fixes_amplitude_unit_and_reads_levels(awg, sim):
    assert awg.identity.startswith("Agilent Technologies,33522B,")
    assert list(sim.received)[:5] == [
        b"*IDN?",
        b"SOUR1:VOLT:UNIT VPP",
        b":SYST:ERR?",
        b"SOUR1:VOLT?",
        b"SOUR1:VOLT:OFFS?",
    ]
    assert all(ch.unit == "VPP" for ch in sim.channels.values())
    assert awg.query("SYST:ERR?") == '+0,"No error"'


@pytest.mark.parametrize(
    ("name", "channel", "value", "wire", "truth"),
    [
        ("function", 2, "SQU", b"SOUR2:FUNC SQU", lambda s: s.channels[2].function),
        ("frequency_hz", 1, 12345.5, b"SOUR1:FREQ 12345.5", lambda s: s.channels[1].frequency_hz),
        ("amplitude_vpp", 2, 3.25, b"SOUR2:VOLT 3.25", lambda s: s.channels[2].amplitude_vpp),
        ("offset_v", 1, -1.5, b"SOUR1:VOLT:OFFS -1.5", lambda s: s.channels[1].offset_v),
        ("output", 2, True, b"OUTP2 1", lambda s: s.channels[2].output),
        (
            "arb_sample_rate_hz",
            1,
            2.5e6,
            b"SOUR1:FUNC:ARB:SRAT 2500000",
            lambda s: s.channels[1].arb_sample_rate,
        ),
        ("byte_order", None, "little", b"FORM:BORD SWAP", lambda s: not s.big_endian),
    ],
)
def test_setting_round_trips(awg, sim, name, channel, value, wire, truth):
    awg.set(name, value, channel)
    assert wire in sim.received
    assert truth(sim) == (True if name == "byte_order" else value)
    awg.cache.clear()
    assert awg.get(name, channel) == value


@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_arb_upload_holds_exact_codes_in_either_byte_order(awg, sim, byte_order):
    awg.byte_order = byte_order
    samples = newline_rich_samples()
    sim.received.clear()
    awg.upload_arb(2, "nl_test", samples, 1e6)

    messages = list(sim.received)
    upload = next(m for m in messages if m.startswith(b"SOUR2:DATA:ARB:DAC nl_test,"))
    order = ">i2" if byte_order == "big" else "<i2"
    payload = dac_codes(samples).astype(order).tobytes()
    assert b"\n" in payload and payload.endswith(b"\r")  # framing must not cut or strip
    assert upload == b"SOUR2:DATA:ARB:DAC nl_test,#224" + payload
    # the byte order is read back before the data, and memory is cleared first
    assert messages.index(b"FORM:BORD?") < messages.index(b"SOUR2:DATA:VOL:CLE")
    assert messages.index(b"SOUR2:DATA:VOL:CLE") < messages.index(upload)

    stored = sim.channels[2].volatile["nl_test"]
    assert stored.dtype == np.int16
    np.testing.assert_array_equal(stored, dac_codes(samples))
    assert stored[1] == 0x0A0A and stored[-1] == 0x0D0D
    ch = sim.channels[2]
    assert (ch.function, ch.arb_name, ch.arb_sample_rate) == ("ARB", "nl_test", 1e6)
    assert awg.volatile_catalog(2) == ["INT:\\BUILTIN\\EXP_RISE.ARB", "nl_test"]
    assert awg.volatile_free_points(2) == 1_000_000 - 8192 - samples.size
    assert sim.channels[1].volatile.keys() == {"INT:\\BUILTIN\\EXP_RISE.ARB"}


def test_reupload_under_the_same_name_replaces_the_waveform(awg, sim):
    first = np.linspace(-1, 1, 16)
    awg.upload_arb(1, "ramp", first, 1e5)
    awg.upload_arb(1, "ramp", -first, 1e5)
    np.testing.assert_array_equal(sim.channels[1].volatile["ramp"], dac_codes(-first))


def test_dac_codes_are_symmetric_and_rounded():
    codes = dac_codes(np.array([-1.0, -0.5, 0.0, 1e-6, 0.5, 1.0]))
    assert codes.dtype == np.int16
    assert codes.tolist() == [-32767, -16384, 0, 0, 16384, 32767]


def test_out_of_range_values_are_refused_before_sending(awg, sim):
    awg.amplitude_vpp[1] = 2.0
    awg.offset_v[1] = 1.0
    before = list(sim.received)
    refusals = [
        (lambda: awg.set("amplitude_vpp", 20.0, 1), "amplitude_vpp"),
        (lambda: awg.set("amplitude_vpp", 0.5, 3), "channel"),
        (lambda: awg.set("offset_v", 4.5, 1), "offset_v"),  # 4.5 + 2/2 > 5
        (lambda: awg.set("amplitude_vpp", 8.5, 1), "amplitude_vpp"),  # 1 + 8.5/2 > 5
        (lambda: awg.set("function", "TRIANGLE", 1), "function"),
        (lambda: awg.set("arb_sample_rate_hz", 200e6, 2), "arb_sample_rate_hz"),
        (lambda: awg.upload_arb(1, "1starts_digit", np.zeros(8), 1e6), "arb_name"),
        (lambda: awg.upload_arb(1, "much_too_long_name", np.zeros(8), 1e6), "arb_name"),
        (lambda: awg.upload_arb(1, "has-dash", np.zeros(8), 1e6), "arb_name"),
        (lambda: awg.upload_arb(1, "short", np.zeros(7), 1e6), "arb length"),
        (lambda: awg.upload_arb(1, "long", np.zeros(1_000_001), 1e6), "arb length"),
        (lambda: awg.upload_arb(1, "big", np.full(16, 1.001), 1e6), "arb samples"),
        (lambda: awg.upload_arb(1, "nan", np.array([0.0] * 8 + [np.nan]), 1e6), "arb samples"),
        (lambda: awg.upload_arb(1, "flat", np.zeros((2, 8)), 1e6), "arb samples"),
        (lambda: awg.upload_arb(1, "fast", np.zeros(8), 1e9), "arb_sample_rate_hz"),
        (lambda: awg.upload_arb(3, "chan", np.zeros(8), 1e6), "channel"),
        (lambda: awg.select_arb(1, "bad name"), "arb_name"),
        (lambda: awg.select_arb(1, "trailing\n"), "arb_name"),
    ]
    for action, setting in refusals:
        with pytest.raises(LimitViolation, match=setting):
            action()
    assert list(sim.received) == before
    assert sim.channels[1].amplitude_vpp == 2.0 and sim.channels[1].offset_v == 1.0


def test_amplitude_offset_refusal_names_both(awg):
    awg.offset_v[2] = 3.0
    with pytest.raises(LimitViolation) as info:
        awg.amplitude_vpp[2] = 5.0
    message = str(info.value)
    assert "amplitude_vpp=5 Vpp" in message and "offset_v=3 V" in message
    assert "awg1" in message and "5 V" in message
    awg.amplitude_vpp[2] = 4.0  # 3 + 2 = 5 V: on the limit, accepted


def test_instrument_side_conflict_and_unknown_arb_raise_its_error_text(awg, sim):
    awg.amplitude_vpp[1] = 4.0
    with pytest.raises(InstrumentCommandError, match="Settings conflict") as info:
        awg.write("SOUR1:VOLT:OFFS 3.5")  # raw: bypasses the driver's own check
    assert info.value.code == -221
    assert sim.channels[1].offset_v == 0.0
    with pytest.raises(InstrumentCommandError, match=r"nosuch.*not in volatile memory") as info:
        awg.select_arb(1, "nosuch")
    assert info.value.code == -224
    assert info.value.command == 'SOUR1:FUNC:ARB "nosuch"'
    assert sim.channels[1].function == "SIN"


def test_sim_refuses_bad_uploads_with_instrument_errors(awg, sim):
    with pytest.raises(InstrumentCommandError, match="Block data error"):
        awg.write_block("SOUR1:DATA:ARB:DAC odd,", np.zeros(9, dtype=np.int8), big_endian=True)
    with pytest.raises(InstrumentCommandError, match=r"-32767\.\.32767"):
        awg.write("DATA:ARB:DAC low," + ",".join(["-32768"] + ["0"] * 8))
    with pytest.raises(InstrumentCommandError, match="at least 8 points"):
        awg.write("DATA:ARB few,0.1,0.2")
    awg.write("DATA:ARB dup," + ",".join(["0.5"] * 8))
    with pytest.raises(InstrumentCommandError, match="Arb name conflict") as info:
        awg.write("DATA:ARB dup," + ",".join(["0.5"] * 8))
    assert info.value.code == 786
    assert set(sim.channels[1].volatile) == {"INT:\\BUILTIN\\EXP_RISE.ARB", "dup"}


def test_third_party_raw_upload_sequence(bench, sim):
    """The 33500B upload sequence as plain pyvisa scripts send it, then read by our driver."""
    codes = np.rint(np.sin(2 * np.pi * np.arange(4000) / 4000) * 32767).astype(np.int16)
    inst = resource_manager().open_resource(
        bench.resources["awg1"], read_termination="\n", write_termination="\n", timeout=2000
    )
    try:
        inst.write("FORM:BORD SWAP")
        inst.write("DATA:VOL:CLE")
        inst.write_binary_values(
            "SOUR1:DATA:ARB:DAC myarb, ", codes, datatype="h", is_big_endian=False
        )
        for command in (
            "SOUR1:FUNC ARB",
            "SOUR1:FUNC:ARB myarb",
            "SOUR1:FUNC:ARB:SRAT 1e6",
            "SOUR1:VOLT 2",
            "SOUR1:VOLT:OFFS 0",
            "OUTP1 ON",
        ):
            inst.write(command)
        # a float upload to channel 2 as a comma list and as a float32 block
        inst.write("SOUR2:DATA:ARB flist," + ",".join(f"{v:.4f}" for v in np.linspace(-1, 1, 9)))
        inst.write_binary_values(
            "SOURCE2:DATA:ARBITRARY fblock,",
            np.linspace(-1, 1, 9).astype(np.float32),
            datatype="f",
            is_big_endian=False,
        )
        assert inst.query("SYST:ERR?") == '+0,"No error"'
        assert inst.query("SOUR1:FUNC:ARB?") == '"myarb"'
        assert inst.query("SOUR1:FUNC:ARB:SRAT?") == "+1.00000000E+06"
        assert inst.query("OUTP1?") == "1"
    finally:
        inst.close()
    np.testing.assert_array_equal(sim.channels[1].volatile["myarb"], codes)
    expected = np.rint(np.linspace(-1, 1, 9) * 32767).astype(np.int16)
    np.testing.assert_array_equal(sim.channels[2].volatile["flist"], expected)
    np.testing.assert_array_equal(sim.channels[2].volatile["fblock"], expected)

    driver = Keysight33500B("awg1", bench.resources["awg1"], timeout_s=0.5)
    driver.connect()
    try:
        assert driver.byte_order == "little"
        assert driver.function[1] == "ARB" and driver.arb_name[1] == "myarb"
        assert driver.output[1] is True and driver.amplitude_vpp[1] == 2.0
    finally:
        driver.close(safe=False)


def test_voltage_units_other_than_vpp(awg, sim):
    awg.amplitude_vpp[1] = 1.0  # a sine
    awg.voltage_unit[1] = "Vrms"
    assert float(awg.query("SOUR1:VOLT?")) == pytest.approx(0.5 / math.sqrt(2), rel=1e-6)
    awg.voltage_unit[1] = "dBm"
    assert float(awg.query("SOUR1:VOLT?")) == pytest.approx(10 * math.log10(2.5), rel=1e-6)
    awg.write("SOUR1:VOLT 10")  # 10 dBm = 10 mW into 50 ohm
    assert sim.channels[1].amplitude_vpp == pytest.approx(2 * math.sqrt(2 * 50 * 0.01))


def test_safe_state_ramps_amplitude_down_then_turns_outputs_off(bench, connect, sim):
    awg = connect(bench, "awg1", ramps={"amplitude_vpp": 100.0}, ramp_step_s=0.001)
    awg.amplitude_vpp[1] = 2.0
    awg.output_on(1)
    awg.output_on(2)
    sim.received.clear()
    awg.safe_state()
    sent = list(sim.received)
    ramp = [float(m.split()[1]) for m in sent if m.startswith(b"SOUR1:VOLT ")]
    assert len(ramp) == 20 and ramp[-1] == pytest.approx(1e-3)
    assert all(b < a for a, b in zip([2.0, *ramp], ramp, strict=False))
    assert max(abs(b - a) for a, b in zip([2.0, *ramp], ramp, strict=False)) <= 0.1 + 1e-9
    assert sent.index(b"OUTP1 0") > max(
        i for i, m in enumerate(sent) if m.startswith(b"SOUR1:VOLT ")
    )
    assert sim.channels[1].output is False and sim.channels[2].output is False
    assert sim.channels[1].amplitude_vpp == pytest.approx(1e-3)


def test_failed_ramp_ends_in_safe_state(bench, connect, sim):
    awg = connect(bench, "awg1", ramps={"amplitude_vpp": 100.0}, ramp_step_s=0.001)
    awg.amplitude_vpp[2] = 1.0
    awg.output_on(2)
    sim.faults.inject(Fault.ERROR, code=-240, text="Hardware error;output stage")
    with pytest.raises(InstrumentCommandError, match="output stage"):
        awg.amplitude_vpp[2] = 3.0
    assert sim.channels[2].output is False
    assert sim.channels[2].amplitude_vpp == pytest.approx(1e-3)


def test_close_turns_outputs_off(bench, sim):
    driver = Keysight33500B("awg1", bench.resources["awg1"], timeout_s=0.5)
    driver.connect()
    driver.output_on(1)
    driver.output_on(2)
    driver.close()
    assert [ch.output for ch in sim.channels.values()] == [False, False]


@pytest.mark.parametrize(("value", "wire"), [("step", "STEP"), ("off", "OFF"), ("normal", "NORM")])
def test_arb_filter_selects_the_reconstruction(awg, sim, value, wire):
    awg.set("arb_filter", value, 2)
    assert f"SOUR2:FUNC:ARB:FILT {wire}".encode() in sim.received
    assert sim.channels[2].arb_filter == wire
    awg.cache.clear()
    assert awg.get("arb_filter", 2) == value
