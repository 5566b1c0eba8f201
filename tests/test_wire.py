"""A page's envelope: decoded, checked for shape, its numbers read tolerantly."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from cmx_connect_exporter.cmx.wire import PageReader, field
from cmx_connect_exporter.counting.tally import Tally
from cmx_connect_exporter.outcome import PollError
from cmx_pages import envelope, read_page, record


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
    page = read_page(json.dumps(envelope([record()], next_index)).encode(), 100)
    assert page.next_index == read


class _Refuses:
    def decode(self, body: bytes) -> Any:
        raise msgspec.DecodeError("refused")


@pytest.fixture(params=["msgspec", "stdlib"])
def reader(request: pytest.FixtureRequest) -> PageReader:
    """Pages are decoded by msgspec, then by the stdlib when msgspec refuses; "stdlib" takes that path at once."""
    reader = PageReader(Tally().keys)
    if request.param == "stdlib":
        reader._decoder = _Refuses()  # type: ignore[assignment]
    return reader


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"nextIndex": 0, "records": [{"macAddress": "00:11:22:33:44:55", "bytesSent": ' + b"7" * 5000 + b"}]}",
     "holds a number too long to read"),
    (b'{"nextIndex": ' + b"9" * 5000 + b', "records": []}', "holds a number too long to read"),
    (b"[" * 100_000, "is nested too deeply"),
    (b'{"records": [{"macAddress": "00:11:22:33:44:55", "bytesSent": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     "is nested too deeply"),
    (b'{"records": [{"macAddress": "00:11:22:33:44:55", "Notes": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     "is nested too deeply"),
    (b'{"nextIndex": 0, "records": [{"macAddress": "00:11', "is truncated JSON"),
    (b"CMX Error", "is not JSON"),
], ids=["long number in a record", "long nextIndex", "deep", "deep in a record", "deep in a field not read",
        "truncated", "text"])
def test_undecodable_page_is_a_bad_response_that_says_why(reader: PageReader, body: bytes, problem: str) -> None:
    with pytest.raises(PollError) as caught:
        reader(body, 300)
    assert caught.value.reason == "bad_response"
    assert str(caught.value) == f"page at index 300 {problem}", "the message names the problem, never the content"


@pytest.mark.parametrize(("offset", "read"), [(-14400000, -14400000), ("-3600000", -3600000), ("+0", 0),
                                               ("\u00b2", None), (None, None), (True, None)],
                         ids=["number", "text", "signed zero", "superscript", "null", "bool"])
def test_time_zone_offset_is_kept_as_sent_when_it_is_a_plain_integer(offset: Any, read: int | None) -> None:
    body = {**envelope([record()]), "timeZoneOffset": offset}
    assert read_page(json.dumps(body).encode()).tz_offset == read


@pytest.mark.parametrize(("body", "problem"), [
    (b"[1, 2]", "has no 'records' list"),
    (b'{"records": {"macAddress": "00:11:22:33:44:55"}}', "has no 'records' list"),
    (b'{"nextIndex": 0}', "has no 'records' list"),
    (b'{"records": [{"macAddress": "00:11:22:33:44:55"}, "00:11:22:33:44:55"]}',
     "holds a record that is not a JSON object"),
], ids=["a list", "an object", "missing", "a string record"])
def test_page_of_the_wrong_shape_is_a_bad_response_that_says_why(reader: PageReader, body: bytes,
                                                                   problem: str) -> None:
    with pytest.raises(PollError) as caught:
        reader(body, 300)
    assert (caught.value.reason, str(caught.value)) == ("bad_response", f"page at index 300 {problem}")


@pytest.mark.parametrize("body", [
    b'{"records": [{"macAddress": "00:11:22:33:44:55", "authType": "SMS", "Email": "a@b.example"}], "nextIndex": 1}',
    b'{"records": [{"macAddress": "00:11:22:33:44:55", "authType": "SMS\\ud800", "Email": "a@b.example"}], '
    b'"nextIndex": 1}',  # a lone surrogate, which only the stdlib reads
    b'\xef\xbb\xbf{"records": [{"macAddress": "00:11:22:33:44:55", "authType": "SMS", "Email": "a@b.example"}], '
    b'"nextIndex": 1}',  # a byte order mark
], ids=["plain", "lone surrogate", "BOM"])
def test_records_hold_only_the_keys_read(reader: PageReader, body: bytes) -> None:
    """Fields the tally never reads, such as a guest's e-mail, are skipped by the decoder: never held."""
    page = reader(body, 0)
    assert page.next_index == 1
    [only] = page.records
    assert field("macAddress")(only) == "00:11:22:33:44:55"
    assert field("authType")(only).startswith("SMS")
    assert field("language")(only) is None, "a key the record lacks reads as None"
    assert "a@b.example" not in repr(only)
    assert len(type(only).__struct_fields__) == len(Tally().keys), "a field for each key read, and no other"


def test_defects_in_fields_not_read_do_not_fail_the_page() -> None:
    """msgspec skips a field no tally reads without building it: its value cannot fail the page."""
    body = (b'{"records": [{"macAddress": "00:11:22:33:44:55", "Name": "\xff\xfe", "Notes": ' + b"7" * 5000
            + b'}], "nextIndex": 0}')
    [only] = PageReader(Tally().keys)(body, 0).records
    assert field("macAddress")(only) == "00:11:22:33:44:55"


def test_keys_that_differ_only_in_punctuation_are_refused() -> None:
    with pytest.raises(ValueError, match="two record keys"):
        PageReader(["location/Site", "location_Site"])
