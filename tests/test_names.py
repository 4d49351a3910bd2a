"""File names as the tables write them (analysis.data.names): valid UTF-8, reversible to the real bytes, one log
line."""

from __future__ import annotations

import json
import logging
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.data.names import make_display, make_id_part, make_log_safe, read_id_bytes
from analysis.store import tables
from jobs.runtime import OneLineFormatter

# Any name Linux accepts: bytes without '/' or NUL.
NAME_BYTES = st.binary(min_size=1, max_size=255).filter(lambda b: b"/" not in b and b"\0" not in b)


@settings(max_examples=500, deadline=None)
@given(NAME_BYTES, NAME_BYTES)
def test_ids_are_utf8_and_give_back_the_real_bytes(a, b):
    id_a, id_b = make_id_part(os.fsdecode(a)), make_id_part(os.fsdecode(b))
    id_a.encode("utf-8")  # strict: no lone surrogate reaches Parquet or JSON
    assert read_id_bytes(id_a) == a
    assert (id_a == id_b) == (a == b)  # names that differ in any byte keep different ids
    assert read_id_bytes(f"{id_a}/{id_b}") == a + b"/" + b


def test_the_contract_examples():
    assert make_id_part(os.fsdecode(b"dog.9032.\xff\xfe.jpg")) == "dog.9032.\\xff\\xfe.jpg"
    assert make_id_part("back\\slash.jpg") == "back\\\\slash.jpg"
    # The text "\xff" (four characters) and the byte 0xff are two names, and two ids.
    assert make_id_part("cat.\\xff.jpg") != make_id_part(os.fsdecode(b"cat.\xff.jpg"))
    for plain in ("cat.0.jpg", "cat.ñandú 9027.jpg", "new\nline <b>.jpg", "café", "cafe\u0301"):
        assert make_id_part(plain) == plain  # valid UTF-8 without a backslash is the path itself


def test_display_and_log_lines():
    assert make_display(os.fsdecode(b"/data/caf\xe9")) == "/data/caf\\xe9"
    line = make_log_safe(os.fsdecode(b"a\nforged 00:00:00 INFO done\r\t\x1b[31m\xff"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\\n" in line and "\\xff" in line
    line.encode("utf-8")


def test_log_records_stay_one_line():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "found %s", (os.fsdecode(b"cat.\n\xff.jpg"),), None)
    text = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert text == "INFO found cat.\\n\\xff.jpg"


def test_json_outputs_never_hold_a_lone_surrogate(tmp_path):
    obj = {"path": os.fsdecode(b"/d/caf\xe9"), "list": [os.fsdecode(b"\xff")], os.fsdecode(b"k\xfe"): 1}
    tables.write_json_atomic(obj, tmp_path / "x.json")
    text = (tmp_path / "x.json").read_bytes().decode("utf-8")  # strict
    assert "\\udc" not in text
    assert json.loads(text) == {"path": "/d/caf\\xe9", "list": ["\\xff"], "k\\xfe": 1}
