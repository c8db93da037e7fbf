"""The entanglement live display: plain lines for pipes, a rich table on a terminal."""

from __future__ import annotations

import io
import json
import math

from rich.console import Console

from labctl.entangle_display import (
    EntanglementDisplay,
    format_header_line,
    format_instrument_line,
    format_status_lines,
    status_renderable,
)
from labctl.entangle_status import EntanglementStatus, PairStatus, PumpStatus, TecStatus
from labctl.isaqn_display import LiveDisplay

NAN = math.nan


def pair(**overrides: object) -> PairStatus:
    values: dict[str, object] = dict(
        user_a="alice",
        user_b="bob",
        channel_a=4,
        channel_b=6,
        process="nondegenerate",
        singles_a_hz=131_240.0,
        singles_b_hz=98_760.0,
        coincidences_hz=1234.4,
        accidentals_hz=4.1,
        car=301.2,
        car_err=12.3,
        delay_ps=-2345.4,
        visibility=0.9512,
        visibility_err=0.0043,
        qber_z=0.0123,
        qber_x=0.0244,
        sifted_hz=617.0,
        key_rate_bps=321.4,
        scans=3,
    )
    values.update(overrides)
    return PairStatus(**values)  # type: ignore[arg-type]


def status(**overrides: object) -> EntanglementStatus:
    values: dict[str, object] = dict(
        time_s=12.34,
        interval_s=1.0,
        pairs=(
            pair(),
            pair(
                user_a="carol",
                user_b="dave",
                channel_a=-4,
                channel_b=14,
                singles_b_hz=NAN,
                coincidences_hz=NAN,
                accidentals_hz=NAN,
                car=NAN,
                car_err=NAN,
                delay_ps=NAN,
                visibility=NAN,
                visibility_err=NAN,
                qber_z=NAN,
                qber_x=NAN,
                sifted_hz=NAN,
                key_rate_bps=NAN,
                scans=0,
            ),
        ),
        total_key_rate_bps=321.4,
        pumps=(
            PumpStatus("pump0", 0, True, 1550.12, 0.5),
            PumpStatus("pump10", 10, False, 1540.56, 0.0),
        ),
        tec=TecStatus("tec1", 25.00123, 25.0, -0.1234, True),
        clock_state="tracking",
        clock_offset_ps=12_300_456_000.0,  # 12.300456 ms
        clock_drift_ppm=2.5,
        clock_locked_fraction=0.97,
        lost_events=0,
        scan_step=4,
        messages=("carol-dave: no coincidence peak yet",),
    )
    values.update(overrides)
    return EntanglementStatus(**values)  # type: ignore[arg-type]


def row(lines: list[str], users: str) -> str:
    return next(line for line in lines if line.lstrip().startswith(users))


def test_plain_pair_line_shows_every_column() -> None:
    cells = row(format_status_lines(status()), "alice-bob").split()
    assert cells == [
        "alice-bob",
        "4/6",
        "131.2/98.8",  # singles in kHz
        "1234",
        "301+-12",  # CAR +- its error
        "-2345",
        "95.1+-0.4",  # visibility in %
        "1.23",  # QBER in %
        "321",
    ]


def test_plain_pair_line_shows_nan_as_dash() -> None:
    cells = row(format_status_lines(status()), "carol-dave").split()
    assert cells == ["carol-dave", "-4/14", "131.2/-", "-", "-", "-", "-", "-", "-"]


def test_error_without_value_or_value_without_error() -> None:
    lines = format_status_lines(status(pairs=(pair(car_err=NAN, visibility=NAN),)))
    cells = row(lines, "alice-bob").split()
    assert cells[4] == "301" and cells[6] == "-"


def test_plain_layout_header_instruments_table_messages() -> None:
    st = status()
    lines = format_status_lines(st)
    assert lines[0] == format_header_line(st)
    assert lines[1] == format_instrument_line(st)
    assert lines[2].split() == [
        "users",
        "ch",
        "singles",
        "kHz",
        "coinc/s",
        "CAR",
        "delay",
        "ps",
        "V",
        "%",
        "QBER",
        "%",
        "key",
        "b/s",
    ]
    assert lines[-1] == "! carol-dave: no coincidence peak yet"
    assert len(lines) == 6  # header, instruments, table header, two pairs, one message
    assert len({len(line) for line in lines[2:5]}) == 1  # the table's columns line up
    assert "nan" not in "\n".join(lines)


def test_header_line_tracking_clock() -> None:
    assert format_header_line(status()) == (
        "t = 12.3 s  key 321 bit/s total  scan step 4  lost 0  clock tracking: offset "
        "12300.456 us, drift +2.5000 ppm, 97% frames locked"
    )


def test_header_line_other_clock_states_and_nan() -> None:
    line = format_header_line(status(clock_state="searching", total_key_rate_bps=NAN))
    assert line.endswith("clock searching") and "key - bit/s" in line
    tracking = format_header_line(status(clock_drift_ppm=NAN, clock_locked_fraction=NAN))
    assert "drift - ppm, -% frames locked" in tracking


def test_instrument_line_pumps_and_tec() -> None:
    assert format_instrument_line(status()) == (
        "pump0 (pump 0) on 1550.1200 nm 0.500 mW  |  "
        "pump10 (pump 10) off 1540.5600 nm 0.000 mW  |  "
        "tec1 25.0012 degC (set 25.000, -0.123 A)"
    )
    off = format_instrument_line(status(tec=TecStatus("tec1", 24.0, 25.0, 0.0, False)))
    assert off.endswith("tec1 24.0000 degC (set 25.000, +0.000 A, OFF)")
    assert "tec1" not in format_instrument_line(status(tec=None))


def test_display_plain_mode_writes_the_lines() -> None:
    out = io.StringIO()
    display = EntanglementDisplay(file=out, plain=True)
    assert isinstance(display, LiveDisplay) and display.plain
    with display:
        display(status())
        display(status(time_s=13.34, messages=()))
    text = out.getvalue()
    assert "\x1b[" not in text  # no ANSI escapes
    assert text.splitlines() == format_status_lines(status()) + format_status_lines(
        status(time_s=13.34, messages=())
    )
    assert display.last == status(time_s=13.34, messages=())


def test_display_rich_mode_renders_the_table() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160, record=True)
    display = EntanglementDisplay(console=console)
    assert not display.plain
    with display:
        display(status())
        display(status(time_s=13.34))
    display.stop()  # idempotent
    assert "\x1b[" in buf.getvalue()  # drawn for a terminal
    text = console.export_text()
    for fragment in (
        "Entanglement network",
        "alice-bob",
        "carol-dave",
        "131.2/98.8",
        "301+-12",
        "95.1+-0.4",
        "tracking: offset 12300.456 us",
        "tec1 25.0012 degC",
        "! carol-dave: no coincidence peak yet",
    ):
        assert fragment in text, fragment
    assert "t = 13.3 s" in text[text.rindex("Entanglement network") :]
    assert "nan" not in text


def test_status_renderable_prints_on_a_plain_console() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    console.print(status_renderable(status()))
    text = console.export_text()
    assert "key b/s" in text and "-4/14" in text and "pump10 (pump 10) off" in text


def test_display_waits_for_the_first_status() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    with EntanglementDisplay(console=console):
        pass
    assert "waiting for the tagger clocks" in console.export_text()


def test_to_dict_is_json_ready() -> None:
    data = status().to_dict()
    carol = data["pairs"][1]
    assert carol["car"] is None and carol["visibility"] is None and carol["key_rate_bps"] is None
    assert carol["singles_a_hz"] == 131_240.0 and carol["scans"] == 0
    assert data["pairs"][0]["car"] == 301.2
    assert data["tec"] == {
        "name": "tec1",
        "temperature_c": 25.00123,
        "setpoint_c": 25.0,
        "current_a": -0.1234,
        "output": True,
    }
    assert data["pumps"][1]["emission"] is False
    assert data["messages"] == ["carol-dave: no coincidence peak yet"]
    text = json.dumps(data, allow_nan=False)  # raises if a nan slipped through
    assert json.loads(text) == data
    assert status(tec=None, clock_drift_ppm=math.inf).to_dict()["clock_drift_ppm"] is None
