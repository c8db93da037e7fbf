"""A small SCPI engine shared by every simulated SCPI instrument.

What it does, as IEEE 488.2 / SCPI-1999 describe it:

* headers in short or long form, any case (``SOUR1:VOLT``, ``source1:voltage``);
  patterns are written the way manuals print them, with the short form in
  capitals, ``[optional]`` nodes and ``#`` for a numeric suffix that
  defaults to 1: ``SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]``;
* queries (``?``), several commands in one message separated by ``;`` (a
  following command without a leading colon keeps the previous path);
* numbers with unit suffixes and ``MIN``/``MAX``/``DEF``;
* an error queue read by ``SYST:ERR?`` with the standard codes, and the common
  commands ``*IDN? *RST *CLS *OPC? *OPC *WAI *ESR? *STB?``;
* IEEE 488.2 definite-length binary blocks in arguments and in replies; the
  :class:`MessageFramer` never splits a block on a newline byte inside it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Reply = str | bytes | None
Arg = str | bytes
SetHandler = Callable[[list[Arg], tuple[int, ...]], None]
QueryHandler = Callable[[list[Arg], tuple[int, ...]], Reply]


class ScpiError(Exception):
    """Raised by handlers; pushed onto the error queue as ``code,"text"``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code},{text}")
        self.code = code
        self.text = text


# Standard SCPI error texts used by the simulators.
COMMAND_ERROR = -100
SYNTAX_ERROR = -102
DATA_TYPE_ERROR = -104
PARAMETER_NOT_ALLOWED = -108
MISSING_PARAMETER = -109
UNDEFINED_HEADER = -113
SUFFIX_ERROR = -131
BLOCK_DATA_ERROR = -160
EXECUTION_ERROR = -200
SETTINGS_CONFLICT = -221
DATA_OUT_OF_RANGE = -222
HARDWARE_ERROR = -240
QUEUE_OVERFLOW = -350

_TEXTS = {
    COMMAND_ERROR: "Command error",
    SYNTAX_ERROR: "Syntax error",
    DATA_TYPE_ERROR: "Data type error",
    PARAMETER_NOT_ALLOWED: "Parameter not allowed",
    MISSING_PARAMETER: "Missing parameter",
    UNDEFINED_HEADER: "Undefined header",
    SUFFIX_ERROR: "Invalid suffix",
    BLOCK_DATA_ERROR: "Block data error",
    EXECUTION_ERROR: "Execution error",
    SETTINGS_CONFLICT: "Settings conflict",
    DATA_OUT_OF_RANGE: "Data out of range",
    HARDWARE_ERROR: "Hardware error",
    QUEUE_OVERFLOW: "Queue overflow",
}


def error(code: int, detail: str = "") -> ScpiError:
    text = _TEXTS.get(code, "Error")
    return ScpiError(code, f"{text};{detail}" if detail else text)


# ---------------------------------------------------------------------------
# IEEE 488.2 blocks and framing
# ---------------------------------------------------------------------------
def ieee_block(payload: bytes) -> bytes:
    """Wrap ``payload`` as a definite-length block ``#<n><len><payload>``."""
    length = str(len(payload)).encode()
    return b"#" + str(len(length)).encode() + length + payload


class MessageFramer:
    """Splits a byte stream into program messages ended by ``\\n``.

    Quoted strings and definite-length blocks are skipped over, so a block
    holding newline bytes stays in one message. Feed bytes as they arrive.

    ``terminator`` may also be a tuple of terminators (a serial instrument that
    accepts CR, LF or CR LF: ``(b"\\r", b"\\n")``): a message then ends at the
    first of them, and the empty messages this leaves (the LF of a CR LF pair,
    blank lines) are dropped. With one terminator empty messages are kept.
    """

    def __init__(
        self, terminator: bytes | tuple[bytes, ...] = b"\n", max_message_bytes: int = 512 * 2**20
    ) -> None:
        terminators = (terminator,) if isinstance(terminator, bytes) else tuple(terminator)
        if not terminators or not all(terminators):
            raise ValueError("a message terminator must be a non-empty byte string")
        self.terminators = terminators
        self.terminator = terminators[0]
        self._skip_empty = len(terminators) > 1
        self._end_len = len(self.terminator)  # length of the terminator last found
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._scan = 0  # bytes already known to hold no terminator
        self._block_end = 0  # end of the last block skipped in the current message

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            end = self._find_end()
            if end is None:
                if len(self._buffer) > self.max_message_bytes:
                    self._buffer.clear()
                    self._scan = 0
                    self._block_end = 0
                    raise ScpiError(BLOCK_DATA_ERROR, "Message too long; input discarded")
                return messages
            message = bytes(self._buffer[:end])
            del self._buffer[: end + self._end_len]
            # drop a CR of a CR LF terminator, but never a 0x0D ending a block
            keep = self._block_end
            self._scan = 0
            self._block_end = 0
            message = message[:keep] + message[keep:].rstrip(b"\r")
            if message or not self._skip_empty:
                messages.append(message)

    def _find_end(self) -> int | None:
        buf = self._buffer
        i = self._scan
        n = len(buf)
        while i < n:
            # jump to the next byte that matters
            nxt = n
            for token in (*self.terminators, b"#", b'"', b"'"):
                j = buf.find(token, i)
                if j != -1 and j < nxt:
                    nxt = j
            if nxt == n:
                self._scan = n
                return None
            ch = buf[nxt : nxt + 1]
            for term in self.terminators:
                if buf.startswith(term, nxt):
                    self._end_len = len(term)
                    return nxt
            if ch in (b'"', b"'"):
                close = buf.find(ch, nxt + 1)
                if close == -1:
                    self._scan = nxt
                    return None
                i = close + 1
                continue
            # '#': a definite-length block when followed by a digit 1-9
            if nxt + 1 >= n:
                self._scan = nxt
                return None
            digit = buf[nxt + 1]
            if 0x31 <= digit <= 0x39:
                n_len = digit - 0x30
                if nxt + 2 + n_len > n:
                    self._scan = nxt
                    return None
                length_text = bytes(buf[nxt + 2 : nxt + 2 + n_len])
                if not length_text.isdigit():
                    i = nxt + 1
                    continue
                end = nxt + 2 + n_len + int(length_text)
                if end > n:
                    self._scan = nxt
                    return None
                self._block_end = end
                i = end
                continue
            i = nxt + 1
        self._scan = n
        return None


# ---------------------------------------------------------------------------
# Header patterns
# ---------------------------------------------------------------------------
_NODE = re.compile(r"(\[)?:?([*A-Za-z][A-Za-z0-9]*?)(#)?(\])?$")


def _mnemonic_regex(mnemonic: str) -> str:
    if mnemonic.startswith("*"):
        return re.escape(mnemonic.upper())
    short = "".join(c for c in mnemonic if c.isupper() or c.isdigit())
    long = mnemonic.upper()
    if short == long:
        return short
    return f"(?:{long}|{short})"


def compile_header(pattern: str) -> re.Pattern[str]:
    """Compile a manual-style header pattern into a regex over upper-case headers."""
    parts = re.findall(r"\[?:?[*A-Za-z][A-Za-z0-9]*#?\]?", pattern)
    regex = "^:?"
    first = True
    for part in parts:
        optional = part.startswith("[")
        body = part.strip("[]").lstrip(":")
        suffix = body.endswith("#")
        body = body.rstrip("#")
        node = _mnemonic_regex(body) + (r"(\d*)" if suffix else "")
        if first and optional:
            # a leading optional node ("[SOURce#]:DATA") carries its own
            # separator, so "DATA..." matches as well as "SOUR2:DATA..."
            regex += f"(?:{node}:)?"
            continue
        sep = "" if first else ":"
        regex += f"(?:{sep}{node})?" if optional else f"{sep}{node}"
        first = False
    return re.compile(regex + "$")


@dataclass
class _Command:
    pattern: str
    regex: re.Pattern[str]
    on_set: SetHandler | None
    on_query: QueryHandler | None


def split_args(text: bytes) -> list[Arg]:
    """Split an argument string at top-level commas; blocks become bytes."""
    args: list[Arg] = []
    i, n = 0, len(text)
    current = bytearray()
    while i < n:
        c = text[i : i + 1]
        if c == b"#" and i + 1 < n and 0x31 <= text[i + 1] <= 0x39 and not current.strip():
            n_len = text[i + 1] - 0x30
            length = int(text[i + 2 : i + 2 + n_len])
            start = i + 2 + n_len
            if start + length > n:
                raise error(BLOCK_DATA_ERROR, f"block of {n - start} bytes, header says {length}")
            args.append(bytes(text[start : start + length]))
            i = start + length
            # skip to the next comma
            while i < n and text[i : i + 1] in (b" ", b"\t"):
                i += 1
            if i < n and text[i : i + 1] == b",":
                i += 1
            current = bytearray()
            continue
        if c in (b'"', b"'"):
            close = text.find(c, i + 1)
            if close == -1:
                raise error(SYNTAX_ERROR, "unterminated string")
            current += text[i : close + 1]
            i = close + 1
            continue
        if c == b",":
            args.append(current.decode("latin-1").strip())
            current = bytearray()
            i += 1
            continue
        current += c
        i += 1
    tail = current.decode("latin-1").strip()
    if tail or (args and text.rstrip().endswith(b",")):
        args.append(tail)
    return args


def split_commands(message: bytes) -> list[bytes]:
    """Split a program message at top-level ``;`` (not inside strings or blocks)."""
    commands: list[bytes] = []
    i, start, n = 0, 0, len(message)
    block_end = 0  # whitespace bytes at the end of a block are data: never strip them

    def strip(command: bytes, keep: int) -> bytes:
        if keep <= 0:
            return command.strip()
        return command[:keep].lstrip() + command[keep:].strip()

    while i < n:
        c = message[i : i + 1]
        if c in (b'"', b"'"):
            close = message.find(c, i + 1)
            i = n if close == -1 else close + 1
            continue
        if c == b"#" and i + 1 < n and 0x31 <= message[i + 1] <= 0x39:
            n_len = message[i + 1] - 0x30
            digits = message[i + 2 : i + 2 + n_len]
            if digits.isdigit():
                i = i + 2 + n_len + int(digits)
                block_end = i
                continue
        if c == b";":
            commands.append(strip(message[start:i], block_end - start))
            start = i + 1
        i += 1
    commands.append(strip(message[start:], block_end - start))
    return [c for c in commands if c]


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------
TIME_UNITS = {"S": 1.0, "MS": 1e-3, "US": 1e-6, "NS": 1e-9, "PS": 1e-12}
FREQ_UNITS = {"HZ": 1.0, "KHZ": 1e3, "MHZ": 1e6, "MAHZ": 1e6, "GHZ": 1e9}
VOLT_UNITS = {"V": 1.0, "MV": 1e-3, "UV": 1e-6, "KV": 1e3}
LENGTH_UNITS = {"M": 1.0, "MM": 1e-3, "UM": 1e-6, "NM": 1e-9, "PM": 1e-12}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")


def parse_number(
    arg: Arg,
    *,
    units: Mapping[str, float] | None = None,
    default: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Parse a SCPI numeric argument into SI units.

    ``units`` maps allowed suffixes to their factor; a bare number is taken
    in SI base units unless ``units`` maps ``""`` to another factor.
    """
    if isinstance(arg, bytes):
        raise error(DATA_TYPE_ERROR, "block where a number was expected")
    token = arg.strip().upper()
    if token in ("MIN", "MINIMUM") and minimum is not None:
        return minimum
    if token in ("MAX", "MAXIMUM") and maximum is not None:
        return maximum
    if token in ("DEF", "DEFAULT") and default is not None:
        return default
    match = _NUMBER.match(token)
    if match is None:
        raise error(DATA_TYPE_ERROR, f"not a number: {arg!r}")
    value = float(match.group(1))
    suffix = match.group(2)
    if not suffix and units is not None and "" in units:
        value *= units[""]  # the instrument's unit for a bare number
    elif suffix:
        if units is None or suffix not in units:
            raise error(SUFFIX_ERROR, f"unit {suffix!r} not accepted")
        value *= units[suffix]
    return value


def parse_bool_arg(arg: Arg) -> bool:
    token = arg.strip().upper() if isinstance(arg, str) else ""
    if token in ("1", "ON"):
        return True
    if token in ("0", "OFF"):
        return False
    raise error(DATA_TYPE_ERROR, f"expected ON|OFF|1|0, got {arg!r}")


def parse_choice(arg: Arg, choices: Sequence[str]) -> str:
    """Match a character-data argument against manual-style choices (``SINusoid``)."""
    token = arg.strip().upper() if isinstance(arg, str) else ""
    for choice in choices:
        if compile_header(choice).match(token):
            return "".join(c for c in choice if c.isupper() or c.isdigit())
    raise error(DATA_OUT_OF_RANGE, f"{arg!r} not one of {', '.join(choices)}")


def check_range(value: float, low: float, high: float, what: str) -> float:
    if not (low <= value <= high):
        raise error(DATA_OUT_OF_RANGE, f"{what} {value:g} outside [{low:g}, {high:g}]")
    return value


def fmt_float(value: float) -> str:
    """SCPI NR3 reply format, e.g. ``+1.55000000E-06``."""
    return f"{value:+.8E}"


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------
def _is_query(command: bytes) -> bool:
    head = command.split(None, 1)[0] if command.strip() else b""
    return head.endswith(b"?")


class ScpiEngine:
    """Parses program messages and dispatches them to registered handlers."""

    def __init__(self, identity: str, *, error_queue_size: int = 32) -> None:
        self.identity = identity
        self._commands: list[_Command] = []
        self._errors: deque[tuple[int, str]] = deque()
        self.error_queue_size = error_queue_size
        self.esr = 0  # standard event status register
        self.on_reset: Callable[[], None] | None = None
        self.wait_for_operations: Callable[[], None] = lambda: None
        #: when set, a query that fails still gets a reply: this function's
        #: text for the error (instruments that answer every query, such as
        #: ID Quantique's ``SCPI_ERR_...`` replies); the error is queued as well
        self.query_error_reply: Callable[[ScpiError], str] | None = None
        self._install_common()

    # -- registration ------------------------------------------------------
    def add(
        self,
        pattern: str,
        *,
        on_set: SetHandler | None = None,
        on_query: QueryHandler | None = None,
    ) -> None:
        """Register a header; registering the same pattern again replaces it."""
        command = _Command(pattern, compile_header(pattern), on_set, on_query)
        for i, existing in enumerate(self._commands):
            if existing.pattern.upper() == pattern.upper():
                if on_set is None:
                    command.on_set = existing.on_set
                if on_query is None:
                    command.on_query = existing.on_query
                self._commands[i] = command
                return
        self._commands.append(command)

    def add_value(
        self,
        pattern: str,
        getter: Callable[[tuple[int, ...]], Any],
        setter: Callable[[Arg, tuple[int, ...]], None],
        *,
        formatter: Callable[[Any], str] = fmt_float,
    ) -> None:
        """Register a plain value: ``HEADER value`` sets it, ``HEADER?`` reads it."""

        def on_set(args: list[Arg], suffixes: tuple[int, ...]) -> None:
            if len(args) != 1:
                raise error(MISSING_PARAMETER if not args else PARAMETER_NOT_ALLOWED)
            setter(args[0], suffixes)

        def on_query(args: list[Arg], suffixes: tuple[int, ...]) -> Reply:
            return formatter(getter(suffixes))

        self.add(pattern, on_set=on_set, on_query=on_query)

    def _install_common(self) -> None:
        self.add("*IDN", on_query=lambda a, s: self.identity)
        self.add("*RST", on_set=lambda a, s: self.reset())
        self.add("*CLS", on_set=lambda a, s: self.clear_status())
        self.add("*OPC", on_set=lambda a, s: self._set_opc(), on_query=self._query_opc)
        self.add("*WAI", on_set=lambda a, s: self.wait_for_operations())
        self.add("*ESR", on_query=lambda a, s: self._read_esr())
        self.add("*STB", on_query=lambda a, s: str(self._stb()))
        self.add("SYSTem:ERRor[:NEXT]", on_query=lambda a, s: self.pop_error())
        self.add("SYSTem:ERRor:COUNt", on_query=lambda a, s: str(len(self._errors)))

    # -- status --------------------------------------------------------------
    def push_error(self, code: int, text: str) -> None:
        if len(self._errors) >= self.error_queue_size:
            self._errors.pop()
            self._errors.append((QUEUE_OVERFLOW, "Queue overflow"))
            return
        self._errors.append((code, text))
        # ESR bits: 5 command error, 4 execution error, 3 device error, 2 query error
        if -199 <= code <= -100:
            self.esr |= 1 << 5
        elif -299 <= code <= -200:
            self.esr |= 1 << 4
        elif code != 0:
            self.esr |= 1 << 3

    def pop_error(self) -> str:
        if not self._errors:
            return '+0,"No error"'
        code, text = self._errors.popleft()
        return f'{code:+d},"{text}"'

    @property
    def errors(self) -> list[tuple[int, str]]:
        return list(self._errors)

    def clear_status(self) -> None:
        self._errors.clear()
        self.esr = 0

    def reset(self) -> None:
        if self.on_reset is not None:
            self.on_reset()

    def _set_opc(self) -> None:
        self.wait_for_operations()
        self.esr |= 1

    def _query_opc(self, args: list[Arg], suffixes: tuple[int, ...]) -> Reply:
        self.wait_for_operations()
        return "1"

    def _read_esr(self) -> str:
        value, self.esr = self.esr, 0
        return str(value)

    def _stb(self) -> int:
        return (4 if self._errors else 0) | (32 if self.esr else 0)

    # -- execution ---------------------------------------------------------
    def execute(self, message: bytes) -> list[Reply]:
        """Run one program message; returns the replies of its queries in order."""
        replies: list[Reply] = []
        path: list[str] = []
        for command in split_commands(message):
            try:
                reply, path = self._execute_one(command, path)
            except Exception as exc:
                if not isinstance(exc, ScpiError):  # a simulator bug must not kill the server
                    exc = error(EXECUTION_ERROR, f"{type(exc).__name__}: {exc}")
                self.push_error(exc.code, exc.text)
                if self.query_error_reply is not None and _is_query(command):
                    replies.append(self.query_error_reply(exc))
                continue
            if reply is not None:
                replies.append(reply)
        return replies

    def _execute_one(self, command: bytes, path: list[str]) -> tuple[Reply, list[str]]:
        head, _, rest = command.partition(b" ")
        if b"\t" in head:
            head, _, more = head.partition(b"\t")
            rest = more + b" " + rest
        header = head.decode("latin-1").upper()
        is_query = header.endswith("?")
        if is_query:
            header = header[:-1]
        if not header:
            raise error(SYNTAX_ERROR, "empty header")
        candidates = [header]
        if not header.startswith(":") and not header.startswith("*") and path:
            # SCPI: a following command without a leading colon keeps the path
            candidates.insert(0, ":".join([*path, header]))
        args = split_args(rest) if rest.strip() else []
        for candidate in candidates:
            for cmd in self._commands:
                match = cmd.regex.match(candidate)
                if match is None:
                    continue
                suffixes = tuple(int(g) if g else 1 for g in match.groups())
                new_path = candidate.lstrip(":").split(":")[:-1]
                if header.startswith("*"):
                    new_path = path
                if is_query:
                    if cmd.on_query is None:
                        raise error(UNDEFINED_HEADER, f"{header}? is not a query")
                    return cmd.on_query(args, suffixes), new_path
                if cmd.on_set is None:
                    raise error(UNDEFINED_HEADER, f"{header} is query only")
                cmd.on_set(args, suffixes)
                return None, new_path
        raise error(UNDEFINED_HEADER, header)
