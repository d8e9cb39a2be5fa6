"""Extron SIS on the wire: the commands and reply lines the driver and the failover arbiter share.

Pure and valid MicroPython (no ``re``, no dataclasses): the arbiter's firmware copies this file as is
(docs/failover.md), and ``drivers/switcher/extron.py`` builds on it.

==============================  =====================  ================================
tie input 1 to output 1, A+V    ``tie_command(1, 1)``  ``01*01!`` -> ``Out01 In01 All``
untie output 1                  ``tie_command(0, 1)``  ``00*01!`` -> ``Out01 In00 All``
read output 1's video           ``read_command(1)``    ``01%`` -> ``01`` / ``Out01 In01 Vid``
verbose mode 3                  ``VERBOSE_COMMAND``    ``W3CV`` -> ``Vrb3``
error                                                  ``E01`` ... ``E28``
input signal presence                                  ``Sig 1 0 1 1`` (verbose 1 and 3)
==============================  =====================  ================================

``Sig`` is sent unprompted when an input gains or loses its signal: one 0/1 per input, input 1
first, separated by spaces (some firmware writes the first flag against the word: ``Sig1 0 1 1``).
"""

VERBOSE_COMMAND = b"W3CV\r"
LAYER_CHAR = {"all": "!", "video": "%", "audio": "$"}
TIE_WORDS = ("All", "Vid", "Aud", "RGB")
MAX_LINE = 256


def pad(n, digits):
    s = str(n)
    return "0" * (digits - len(s)) + s if len(s) < digits else s


def tie_command(input, output, digits=2, layer="all"):
    """``input`` to ``output`` (input 0: untie)."""
    return (pad(input, digits) + "*" + pad(output, digits) + LAYER_CHAR[layer]).encode()


def untie_command(output, digits=2):
    return tie_command(0, output, digits)


def read_command(output, digits=2, layer="video"):
    return (pad(output, digits) + LAYER_CHAR[layer]).encode()


def _number(s, most=3):
    if not s or len(s) > most:
        return None
    for c in s:
        if not "0" <= c <= "9":
            return None
    return int(s)


def parse_tie(text):
    """``"Out02 In01 All"`` -> ``(2, 1, "All")``; anything else None."""
    if not text.startswith("Out") or "\t" in text:
        return None
    parts = text.split()
    if len(parts) != 3 or not parts[1].startswith("In") or parts[2] not in TIE_WORDS:
        return None
    out, inp = _number(parts[0][3:]), _number(parts[1][2:])
    if out is None or inp is None:
        return None
    return out, inp, parts[2]


def parse_read(text):
    """A bare read-back (``"01"``) -> 1; anything else None."""
    return _number(text)


def parse_error(text):
    """``"E01"`` -> ``"E01"`` (an SIS error code); anything else None."""
    if len(text) == 3 and text[0] == "E" and _number(text[1:], 2) is not None:
        return text
    return None


def parse_verbose(text):
    """``"Vrb3"`` -> 3; anything else None."""
    if len(text) == 4 and text.startswith("Vrb") and text[3] in "0123":
        return int(text[3])
    return None


def parse_sig(text):
    """``"Sig 1 0 1 1"`` -> ``[True, False, True, True]`` (input 1 first); anything else None."""
    if not text.startswith("Sig"):
        return None
    flags = text[3:].split()
    if not flags or any(f not in ("0", "1") for f in flags):
        return None
    return [f == "1" for f in flags]


def sig_line(present):
    """The device side of ``parse_sig``: ``[True, False]`` -> ``b"Sig 1 0\\r\\n"``."""
    return ("Sig " + " ".join("1" if p else "0" for p in present) + "\r\n").encode()


class LineSplitter:
    """Bytes from the port in, whole reply lines (str, stripped) out; CR, LF or both end a line.
    A line longer than ``MAX_LINE`` is line noise: dropped."""

    def __init__(self):
        self._buf = b""

    def feed(self, data):
        self._buf += data
        out = []
        while True:
            cut = -1
            for i in range(len(self._buf)):
                if self._buf[i] in (10, 13):
                    cut = i
                    break
            if cut < 0:
                break
            line, self._buf = self._buf[:cut], self._buf[cut + 1 :]
            if line:
                try:
                    out.append(line.decode().strip())
                except UnicodeError:
                    pass  # a garbled line: the caller asks again
        if len(self._buf) > MAX_LINE:
            self._buf = b""
        return out
