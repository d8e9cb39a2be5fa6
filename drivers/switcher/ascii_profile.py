"""A configurable ASCII dialect for generic matrices (the "1V2." family and anything like it).

The commands come from templates in ``[drivers.switcher.ascii]`` where ``[x]`` is the input and ``[y]``
the output, and replies are recognised by regular expressions from the same table. The simulator
answers in the default dialect: ``1V2 OK`` to a tie, ``Out2 V In1`` to a read-back, ``Error 02`` to a
bad request.
"""

from __future__ import annotations

import re

from drivers.switcher.config import AsciiProfile, non_numeric_groups
from drivers.switcher.errors import SwitcherGarbage, SwitcherRejected
from drivers.switcher.protocol import (
    DeviceEmulation,
    DeviceInfo,
    Layer,
    Matrix,
    SwitcherProtocol,
    Tie,
    decode_line,
    pad,
    shorten,
)
from kiosk_core.errors import ConfigError

CONFIG_SOURCE = "[drivers.switcher.ascii]"


def check_profile(profile: AsciiProfile) -> None:
    """Raise ``ConfigError`` naming the key for a profile that skipped validation (``model_construct``)
    or was edited after it: a bad regex, or a number group that can match something else."""
    problems = []
    for key in ("route_reply", "query_reply", "error_reply"):
        pattern = getattr(profile, key)
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            problems.append(f"{key}: not a valid regular expression: {exc}")
            continue
        if key != "error_reply" and (bad := non_numeric_groups(pattern)):
            problems.append(f"{key}: group(s) {', '.join(bad)} must match digits only (as \\d+)")
    if not problems and "input" not in re.compile(profile.query_reply).groupindex:
        problems.append("query_reply: needs a named group (?P<input>\\d+) for the input number")
    if problems:
        raise ConfigError(CONFIG_SOURCE, problems)


def number(groups: dict[str, str | None], key: str, line: bytes, setting: str) -> int | None:
    """Group ``key`` of a matched reply as a number (None when the group did not take part); a value
    that is not one is ``SwitcherGarbage`` saying which reply and which setting, never a ``ValueError``."""
    value = groups.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise SwitcherGarbage(
            f"reply {shorten(line)}: group {key!r} of {setting} is {value!r}, not a number "
            f"(check [drivers.switcher.ascii] {setting})"
        ) from None


def fill(template: str, *, x: int | None = None, y: int | None = None, digits: int = 1) -> str:
    out = template
    if x is not None:
        out = out.replace("[x]", pad(x, digits))
    if y is not None:
        out = out.replace("[y]", pad(y, digits))
    return out


def template_regex(template: str) -> re.Pattern[str]:
    """``[x]V[y].`` -> a regex matching ``12V3.`` with groups x and y."""
    parts = re.split(r"(\[x\]|\[y\])", template)
    rx = "".join(f"(?P<{p[1]}>\\d{{1,3}})" if p in ("[x]", "[y]") else re.escape(p) for p in parts)
    return re.compile(rx, re.IGNORECASE)


class AsciiMatrix(SwitcherProtocol):
    name = "ascii"
    title = "generic ASCII matrix"

    def __init__(self, profile: AsciiProfile | None = None, digits: int = 1) -> None:
        self.profile = profile or AsciiProfile()
        check_profile(self.profile)
        self.digits = digits
        self._route_rx = re.compile(self.profile.route_reply)
        self._query_rx = re.compile(self.profile.query_reply)
        self._error_rx = re.compile(self.profile.error_reply)
        self._route_t = {
            Layer.ALL: self.profile.route_all,
            Layer.VIDEO: self.profile.route_video,
            Layer.AUDIO: self.profile.route_audio,
        }
        self._query_t = {Layer.VIDEO: self.profile.query_video, Layer.AUDIO: self.profile.query_audio}

    def _text(self, line: bytes) -> str:
        text = decode_line(line)
        if text and (m := self._error_rx.match(text)):
            code = m.groupdict().get("code") or text
            raise SwitcherRejected(
                f"switcher answered an error ({text!r}); the generic ASCII profile has no "
                "table of meanings: see the switcher's manual",
                device_code=code,
            )
        return text

    def identify_command(self) -> None:
        return None

    def parse_identify(self, line: bytes) -> DeviceInfo | None:
        return None

    def route_command(self, tie: Tie) -> bytes:
        return (
            fill(self._route_t[tie.layer], x=tie.input, y=tie.output, digits=self.digits)
            + self.profile.suffix
        ).encode("ascii")

    def parse_route_reply(self, line: bytes, tie: Tie) -> bool:
        text = self._text(line)
        if not text:
            return False
        m = self._route_rx.match(text)
        if not m:
            raise SwitcherGarbage(
                f"reply {shorten(line)} does not match route_reply {self.profile.route_reply!r}"
            )
        groups = m.groupdict()
        for key, want in (("input", tie.input), ("output", tie.output)):
            got = number(groups, key, line, "route_reply")
            if got is not None and got != want:
                return False  # an acknowledgement of some other tie (front panel): keep waiting
        return True

    def query_command(self, output: int, layer: Layer) -> bytes:
        return (fill(self._query_t[layer], y=output, digits=self.digits) + self.profile.suffix).encode(
            "ascii"
        )

    def parse_query_reply(self, line: bytes, output: int, layer: Layer) -> int | None:
        text = self._text(line)
        if not text:
            return None
        m = self._query_rx.match(text)
        if not m:
            if self._route_rx.match(text):
                return None  # a front-panel tie report
            raise SwitcherGarbage(
                f"reply {shorten(line)} does not match query_reply {self.profile.query_reply!r}"
            )
        groups = m.groupdict()
        got_output = number(groups, "output", line, "query_reply")
        if got_output is not None and got_output != output:
            return None
        got = number(groups, "input", line, "query_reply")
        if got is None:
            raise SwitcherGarbage(
                f"reply {shorten(line)} matches query_reply but its group 'input' took no part in the match"
            )
        return got


class AsciiMatrixDevice(DeviceEmulation):
    """A generic matrix that takes the profile's commands and answers in the default reply dialect."""

    LETTER = {Layer.ALL: "B", Layer.VIDEO: "V", Layer.AUDIO: "A"}

    def __init__(self, matrix: Matrix, profile: AsciiProfile | None = None) -> None:
        super().__init__(matrix)
        p = profile or AsciiProfile()
        self._routes = [
            (template_regex(p.route_all), Layer.ALL),
            (template_regex(p.route_video), Layer.VIDEO),
            (template_regex(p.route_audio), Layer.AUDIO),
        ]
        self._queries = [
            (template_regex(p.query_video), Layer.VIDEO),
            (template_regex(p.query_audio), Layer.AUDIO),
        ]

    def _take_command(self) -> bytes | None:
        text = self._buf.decode("ascii", "replace")
        if text[-1:] in ("\r", "\n"):
            self._buf.clear()
            return text.strip().encode() or None
        stripped = text.lstrip()
        if any(rx.fullmatch(stripped) for rx, _ in self._routes + self._queries):
            self._buf.clear()
            return stripped.encode()
        return None

    def error_reply(self, code: str | None) -> bytes:
        return f"Error {code or '01'}\r\n".encode()

    def answer(self, command: bytes) -> tuple[bytes, Tie | None]:
        text = command.decode("ascii", "replace")
        for rx, layer in self._routes:
            if m := rx.fullmatch(text):
                i, o = int(m["x"]), int(m["y"])
                if not (self.matrix.has_input(i) and self.matrix.has_output(o)):
                    return self.error_reply("02"), None
                return f"{i}{self.LETTER[layer]}{o} OK\r\n".encode(), Tie(i, o, layer)
        for rx, layer in self._queries:
            if m := rx.fullmatch(text):
                o = int(m["y"])
                if not self.matrix.has_output(o):
                    return self.error_reply("02"), None
                return f"Out{o} {self.LETTER[layer]} In{self.matrix.read(o, layer)}\r\n".encode(), None
        return self.error_reply("01"), None
