"""Live display of the entanglement job: per user pair table, pumps, ring TEC, tagger clock.

On a terminal a ``rich`` table redraws in place; elsewhere plain lines, one block per update
(:func:`format_status_lines`). Rates in Hz (singles in kHz), delays in ps, visibility and QBER
in %, key rates in bit/s; ``-`` while a figure is not available yet (no peak, no finished
phase scan).
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from labctl.entangle_status import EntanglementStatus, PairStatus
from labctl.isaqn_display import LiveDisplay, _num
from labctl.loops_display import control_lines, control_renderables


def _pm(value: float, err: float, spec: str, scale: float = 1.0) -> str:
    text = _num(value * scale, spec)
    if text == "-" or err != err:
        return text
    return f"{text}+-{_num(err * scale, spec)}"


def _cells(r: PairStatus) -> list[str]:
    return [
        f"{r.user_a}-{r.user_b}",
        f"{r.channel_a}/{r.channel_b}",
        f"{_num(r.singles_a_hz / 1e3, '.1f')}/{_num(r.singles_b_hz / 1e3, '.1f')}",
        _num(r.coincidences_hz, ".0f"),
        _pm(r.car, r.car_err, ".0f"),
        _num(r.delay_ps, ".0f"),
        _pm(r.visibility, r.visibility_err, ".1f", 100.0),
        _num(100.0 * r.qber_z, ".2f"),
        _num(r.key_rate_bps, ".0f"),
    ]


HEADERS = ["users", "ch", "singles kHz", "coinc/s", "CAR", "delay ps", "V %", "QBER %", "key b/s"]


def format_header_line(status: EntanglementStatus) -> str:
    clock = status.clock_state
    if clock == "tracking":
        clock = (
            f"tracking: offset {_num(status.clock_offset_ps * 1e-6, '.3f')} us, drift "
            f"{_num(status.clock_drift_ppm, '+.4f')} ppm, "
            f"{_num(100 * status.clock_locked_fraction, '.0f')}% frames locked"
        )
    return (
        f"t = {status.time_s:.1f} s  key {_num(status.total_key_rate_bps, '.0f')} bit/s total  "
        f"scan step {status.scan_step}  lost {status.lost_events}  clock {clock}"
    )


def format_instrument_line(status: EntanglementStatus) -> str:
    parts = [
        f"{p.name} (pump {p.label}) {'on' if p.emission else 'off'} "
        f"{_num(p.wavelength_nm, '.4f')} nm {_num(p.power_mw, '.3f')} mW"
        for p in status.pumps
    ]
    if status.tec is not None:
        t = status.tec
        parts.append(
            f"{t.name} {_num(t.temperature_c, '.4f')} degC (set {_num(t.setpoint_c, '.3f')}, "
            f"{_num(t.current_a, '+.3f')} A{'' if t.output else ', OFF'})"
        )
    return "  |  ".join(parts)


def format_status_lines(status: EntanglementStatus) -> list[str]:
    """Plain text: header, instruments, one line per pair, messages."""
    lines = [format_header_line(status), format_instrument_line(status)]
    widths = [11, 7, 13, 8, 9, 9, 10, 7, 8]
    lines.append(" ".join(h.rjust(w) for h, w in zip(HEADERS, widths, strict=True)))
    for r in status.pairs:
        lines.append(" ".join(c.rjust(w) for c, w in zip(_cells(r), widths, strict=True)))
    lines += control_lines(status.loops, status.interlocks)
    lines += [f"! {m}" for m in status.messages]
    return lines


def status_renderable(status: EntanglementStatus) -> RenderableType:
    table = Table(show_edge=False, pad_edge=False)
    for h in HEADERS:
        table.add_column(h, justify="right")
    for r in status.pairs:
        style = "green" if r.key_rate_bps == r.key_rate_bps and r.key_rate_bps > 0 else ""
        cells = _cells(r)
        table.add_row(*(Text(c) for c in cells[:-1]), Text(cells[-1], style))
    parts: list[RenderableType] = [
        Text.assemble(("Entanglement network  ", "bold"), format_header_line(status)),
        Text(format_instrument_line(status)),
        table,
    ]
    parts += control_renderables(status.loops, status.interlocks)
    parts += [Text(f"! {m}", "yellow") for m in status.messages]
    return Group(*parts)


class EntanglementDisplay(LiveDisplay):
    """Status sink for :class:`EntanglementStatus` (rich on a terminal, plain otherwise)."""

    waiting_text = "entanglement network: waiting for the tagger clocks"

    def _lines(self, status: Any) -> list[str]:
        return format_status_lines(status)

    def _renderable(self, status: Any) -> RenderableType:
        return status_renderable(status)
