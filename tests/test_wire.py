"""A page's envelope: decoded, checked for shape, its numbers read tolerantly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cmx_connect_exporter.cmx import wire
from cmx_connect_exporter.cmx.wire import parse_page
from cmx_connect_exporter.outcome import PollError
from cmx_pages import envelope, record


@pytest.mark.parametrize(("next_index", "read"), [
    ("\u00b2", None),  # a superscript two: str.isdigit() says yes, int() says no
    ("\u0663", None),  # an Arabic-Indic three, which int() reads
    ("9" * 5000, None),  # more digits than int() converts
    ("1" * 19, None),
    ("-3", None),
    ("1e3", None),
    (" 12 ", 12),
    ("999999999999999999", 999_999_999_999_999_999),
    ("0", 0),
], ids=["superscript", "arabic-indic", "5000 digits", "19 digits", "negative", "exponent", "spaced", "18 digits",
        "zero"])
def test_next_index_is_read_only_from_a_few_ascii_digits(next_index: str, read: int | None) -> None:
    page = parse_page(json.dumps(envelope([record()], next_index)).encode(), 100)
    assert page.next_index == read


@pytest.fixture(params=["fast", "stdlib"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages are decoded by orjson, then by the stdlib when orjson refuses; without orjson, by the stdlib alone."""
    if request.param == "stdlib":
        monkeypatch.setattr(wire, "fast_loads", json.loads)


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"nextIndex": 0, "records": [{"macAddress": "00:11:22:33:44:55", "bytesSent": ' + b"7" * 5000 + b"}]}",
     "holds a number too long to read"),
    (b'{"nextIndex": ' + b"9" * 5000 + b', "records": []}', "holds a number too long to read"),
    (b"[" * 100_000, "is nested too deeply"),
    (b'{"records": [{"macAddress": "00:11:22:33:44:55", "bytesSent": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     "is nested too deeply"),
    (b'{"nextIndex": 0, "records": [{"macAddress": "00:11', "is truncated JSON"),
    (b"CMX Error", "is not JSON"),
], ids=["long number in a record", "long nextIndex", "deep", "deep in a record", "truncated", "text"])
def test_undecodable_page_is_a_bad_response_that_says_why(decoder: None, body: bytes, problem: str) -> None:
    with pytest.raises(PollError) as caught:
        parse_page(body, 300)
    assert caught.value.reason == "bad_response"
    assert str(caught.value) == f"page at index 300 {problem}", "the message names the problem, never the content"


@pytest.mark.parametrize(("offset", "read"), [(-14400000, -14400000), ("-3600000", -3600000), ("+0", 0),
                                               ("\u00b2", None), (None, None), (True, None)],
                         ids=["number", "text", "signed zero", "superscript", "null", "bool"])
def test_time_zone_offset_is_kept_as_sent_when_it_is_a_plain_integer(offset: Any, read: int | None) -> None:
    body = {**envelope([record()]), "timeZoneOffset": offset}
    assert parse_page(json.dumps(body).encode(), 0).tz_offset == read
