"""File names as the tables write them: valid UTF-8 always, reversible to the name's real bytes.

Linux gives Python a name that is not valid UTF-8 with each undecodable byte as a lone surrogate (PEP 383); such a
string cannot be written to Parquet, JSON or HTML. In an `image_id` (and in a label or split taken from a folder
name) each undecodable byte is written `\\xHH` (two lower-case hex digits) and a backslash itself is written `\\\\`,
so the escape is reversible and two names that differ in any byte keep different ids. Every other character, a
newline or a `<` included, stays as it is: escaping for a page or a log is the page's and the log's job.

    "dog.9032.\\udcff\\udcfe.jpg"  (bytes dog.9032.\\xff\\xfe.jpg)  ->  "dog.9032.\\xff\\xfe.jpg"
    "back\\\\slash.jpg"                                        ->  "back\\\\\\\\slash.jpg"
"""

from __future__ import annotations

import os
import re

_NEEDS_ESCAPE = re.compile(r"[\\\udc80-\udcff]")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _escape_one(m: re.Match) -> str:
    ch = m.group(0)
    return "\\\\" if ch == "\\" else f"\\x{ord(ch) - 0xDC00:02x}"


def make_id_part(name: str) -> str:
    """A name from the file system (str, surrogate-escaped) -> how it stands in an image_id."""
    return _NEEDS_ESCAPE.sub(_escape_one, name)


def read_id_bytes(image_id: str) -> bytes:
    """The inverse of make_id_part: an image_id (or part of one) -> the real bytes of the path it names."""
    out = bytearray()
    pos = 0
    for m in _ESCAPED.finditer(image_id):
        out += image_id[pos : m.start()].encode("utf-8")
        token = m.group(1)
        out += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        pos = m.end()
    out += image_id[pos:].encode("utf-8")
    return bytes(out)


def make_display(text: str | os.PathLike) -> str:
    """Any path or text for a message, JSON or a page: undecodable bytes as \\xHH; nothing else changes."""
    return re.sub(r"[\udc80-\udcff]", lambda m: f"\\x{ord(m.group(0)) - 0xDC00:02x}", os.fspath(text))


def make_log_safe(text: str) -> str:
    """One log line stays one line: control characters (newline, tab, ...) written as escapes, like repr()."""
    text = make_display(text)
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text) if _CONTROL.search(text) else text
