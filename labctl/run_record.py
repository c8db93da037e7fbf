"""What every run's recording holds, whatever the bench: the bench file and the settings.

:class:`RunRecorder` wraps a :class:`~labctl.h5record.Recorder` whose schema is the bench's
tables plus :func:`common_schema_parts`:

* ``/bench/config`` (static text): the bench file as read, with attribute ``path``;
* ``/settings/snapshots`` (table): one row per instrument with every readable setting
  (JSON), taken when the bench is attached (after the safe start);
* ``/settings/changes`` (table): one row per successful ``set`` of any instrument afterwards,
  from the drivers' setting listeners (so loops' and interlocks' writes are there too).

Times are ``t_unix_ns`` (ns since 1970, UTC). The format is documented in
``docs/recording.md``.
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from labctl.config import BenchConfig, ConfigError, parse_bench
from labctl.h5read import Recording, RecordingError
from labctl.h5record import (
    DEFAULT_QUEUE_MAX_BYTES,
    STRING,
    FormatId,
    Recorder,
    RecorderOverrun,
    Schema,
    Static,
    Table,
)

log = logging.getLogger(__name__)

#: a bench with neither [isaqn] nor [entanglement]: only the bench file and the settings
GENERIC_FORMAT = FormatId("labctl-bench", (1, 0))

SNAPSHOT_DTYPE = np.dtype([("t_unix_ns", np.int64), ("instrument", STRING), ("state", STRING)])
CHANGE_DTYPE = np.dtype(
    [
        ("t_unix_ns", np.int64),
        ("instrument", STRING),
        ("setting", STRING),
        ("channel", np.int64),
        ("value", STRING),
    ]
)


def common_schema_parts(config: BenchConfig) -> tuple[list[Table], list[Static]]:
    """The bench file and settings tables every run recording has."""
    tables = [
        Table(
            "settings/snapshots",
            SNAPSHOT_DTYPE,
            chunk_rows=16,
            description="every readable setting of each instrument at start: JSON object "
            "{setting: value} ({setting: {channel: value}} for per-channel settings)",
        ),
        Table(
            "settings/changes",
            CHANGE_DTYPE,
            chunk_rows=256,
            description="every successful set after the start: channel -1 = instrument-wide; "
            "value as JSON",
        ),
    ]
    statics = [
        Static(
            "bench/config",
            config.path.read_text(encoding="utf-8"),
            description="the bench file (TOML) the run used",
            attrs={"path": str(config.path), "name": config.name},
        )
    ]
    return tables, statics


def _json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=True)


class RunRecorder:
    """A run's recording: the engine's :class:`Recorder` plus bench file and settings.

    ``tables``/``statics``/``attrs`` are the bench's own; ``on_error`` gets overruns and the
    writer's failure (the job says so loudly: see :meth:`Recorder.__init__`)."""

    def __init__(
        self,
        path: Path,
        config: BenchConfig,
        format_id: FormatId,
        tables: Sequence[Table],
        statics: Sequence[Static] = (),
        attrs: Mapping[str, Any] | None = None,
        *,
        flush_interval_s: float = 1.0,
        on_error: Any = None,
        overwrite: bool = False,
        queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES,
    ) -> None:
        common_tables, common_statics = common_schema_parts(config)
        schema = Schema(
            format_id,
            [*tables, *common_tables],
            [*statics, *common_statics],
            attrs={"bench": config.name, "seed": int(config.seed), **dict(attrs or {})},
        )
        self.path = Path(path)
        self.recorder = Recorder(
            self.path,
            schema,
            flush_interval_s=flush_interval_s,
            on_error=on_error,
            overwrite=overwrite,
            queue_max_bytes=queue_max_bytes,
        )
        self._instruments: dict[str, Any] = {}
        self.overrun_rows = 0

    def append(self, table: str, rows: Any) -> None:
        """Queue rows; an overrun is counted and logged (the engine logs the gap in the file
        and calls ``on_error``), never raised into acquisition."""
        self._queue(self.recorder.append, table, rows)

    def append_row(self, table: str, row: Any) -> None:
        self._queue(self.recorder.append_row, table, row)

    def _queue(self, add: Any, *args: Any) -> None:
        try:
            add(*args)
        except RecorderOverrun as exc:
            self.overrun_rows += exc.rows
            log.error("%s", exc)

    # -- settings ------------------------------------------------------------------------
    def attach(self, instruments: Mapping[str, Any]) -> None:
        """Snapshot every instrument's settings now, then log every change."""
        now = time.time_ns()
        for name, inst in instruments.items():
            try:
                state = inst.state()
            except Exception as exc:  # a snapshot that fails must not stop the run
                state = {"error": f"{type(exc).__name__}: {exc}"}
                log.warning("%s: settings snapshot failed: %s", name, exc)
            self.append_row("settings/snapshots", (now, name, _json(state)))
        for name, inst in instruments.items():
            inst.add_setting_listener(self._on_setting)
            self._instruments[name] = inst

    def _on_setting(self, instrument: str, setting: str, channel: int | None, value: Any) -> None:
        row = (time.time_ns(), instrument, setting, -1 if channel is None else int(channel))
        self.append_row("settings/changes", (*row, _json(value)))

    def detach(self) -> None:
        for inst in self._instruments.values():
            inst.remove_setting_listener(self._on_setting)
        self._instruments.clear()

    def event(self, kind: str, text: str) -> None:
        self._queue(self.recorder.event, kind, text)

    def close(self) -> None:
        """Stop listening, commit everything and close the file (it stays readable after a
        failure too). Raises the writer's :class:`RecorderError`, if it had one."""
        self.detach()
        self.recorder.close()


def recorded_config(rec: Recording) -> tuple[str, BenchConfig]:
    """The bench file a recording was made with: its text and the parsed configuration."""
    text = rec.static("bench/config")
    try:
        config = parse_bench(tomllib.loads(text), f"{rec.path}:/bench/config")
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise RecordingError(rec.path, f"the recorded bench file is not valid: {exc}") from exc
    return text, config


def settings_at(rec: Recording, t_unix_ns: int | None = None) -> dict[str, dict[str, Any]]:
    """Every instrument's settings at ``t_unix_ns`` (default: the end of the recording): the
    start snapshot with every change up to that time applied. Per-channel settings are
    ``{setting: {"<channel>": value}}``, as in the snapshot."""
    state: dict[str, dict[str, Any]] = {}
    for row in rec.table("settings/snapshots"):
        state[str(row["instrument"])] = json.loads(str(row["state"]))
    for row in rec.table("settings/changes"):
        if t_unix_ns is not None and int(row["t_unix_ns"]) > t_unix_ns:
            break
        inst = state.setdefault(str(row["instrument"]), {})
        value = json.loads(str(row["value"]))
        channel = int(row["channel"])
        if channel < 0:
            inst[str(row["setting"])] = value
        else:
            per_channel = inst.get(str(row["setting"]))
            if not isinstance(per_channel, dict):
                per_channel = {}
                inst[str(row["setting"])] = per_channel
            per_channel[str(channel)] = value
    return state


class Capture:
    """What the bench readers share: the open :class:`Recording` (``rec``), its path, the
    recorded bench file (``config_text``, ``config``); a context manager."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.path = rec.path
        self.config_text, self.config = recorded_config(rec)

    def close(self) -> None:
        self.rec.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> bool:
        """Pick up rows committed since (a file still being written); True if any."""
        return self.rec.refresh()

    @property
    def complete(self) -> bool:
        """The writer closed the file normally."""
        return self.rec.complete


def cell_text(value: Any) -> str:
    """A text cell as ``str`` (plain h5py gives ``bytes``)."""
    return value.decode() if isinstance(value, bytes) else str(value)
