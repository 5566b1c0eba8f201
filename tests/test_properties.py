"""Property tests: whatever the records hold, /metrics stays valid, consistent, capped and clean.

Records come over HTTP (mocked with ``responses``) through the real client, the page walk, the
snapshot and its exposition. They carry quotes, backslashes, new lines, braces, lone surrogates,
10,000-character strings, numbers, lists and objects where strings belong, and duplicate MACs.
Every exposition must parse with prometheus_client's parser and pass ``promtool check metrics``
(all examples in one call at the end, so the test stays fast), every label must sum to the total,
no label may have more series than the cap, and no MAC, name or e-mail may show.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from cmx_connect_exporter.counting.dedupe import session_key
from cmx_connect_exporter.counting.dimensions import (
    BYTES,
    BYTES_KEYS,
    DIMENSIONS,
    DIRECTION,
    DWELL,
    DWELL_BUCKETS,
    LABELS,
    VISIT,
)
from cmx_connect_exporter.counting.tally import MAX_VALUE_LENGTH
from cmx_connect_exporter.exposition.snapshot import TargetState
from cmx_connect_exporter.outcome import Counts
from cmx_connect_exporter.polling.poll import count_active_sessions
from cmx_pages import add_page, as_records, envelope, make_client
from tool_policy import require_tool

NAME, EMAIL = "Jane Canary-Doe", "jane.canary@example.com"  # in every record; must never show
DUPLICATE_MACS = ("00:11:22:33:44:55", "00-11-22-33-44-55", "0011.2233.4455", "AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff")
_unique_macs = itertools.count(0x0200_0000_0000)

nasty_characters = st.one_of(
    st.characters(),  # any code point but a surrogate
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates, sent as JSON escapes
    st.sampled_from('"\\{}=,\n\r\t\x00\x1b\x85\u2028\u00a0 '),
)
# Lists joined, not st.text(): text() quietly drops the surrogates from a mixed alphabet.
short_text = st.lists(nasty_characters, max_size=30).map("".join)
# Longer than the part of a value that is read, yet a page of them (12 records, 11 keys, 6 bytes a
# character as JSON escapes) stays under the client's 1 MiB limit on a small page's body.
long_text = st.lists(nasty_characters, min_size=1, max_size=4).map(lambda seed: ("".join(seed) * 1_000)[:1_000])
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats())
structures = st.recursive(st.one_of(st.none(), st.booleans(), numbers, short_text),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
                          max_leaves=6)
label_value = st.one_of(short_text, short_text, long_text, numbers, structures, st.none())
label_fields = st.fixed_dictionaries({}, optional={key: label_value for d in DIMENSIONS for key in d.keys})
# Times and byte counts: mostly well formed, sometimes anything at all.
instants = st.integers(1_700_000_000, 1_900_000_000)
times = st.one_of(instants, instants.map(lambda t: t * 1000), instants.map(str),
                  st.datetimes().map(lambda d: d.isoformat(sep=" ")), label_value)
byte_counts = st.one_of(st.integers(0, 2**62), st.integers(0, 2**62).map(str), label_value)
venue_fields = st.fixed_dictionaries({}, optional={**dict.fromkeys(VISIT.keys, times),
                                                   **dict.fromkeys(BYTES_KEYS.values(), byte_counts)})
mac = st.one_of(st.none(), st.sampled_from(DUPLICATE_MACS), short_text, numbers)  # None: a fresh unique MAC


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {**draw(label_fields), **draw(venue_fields), "Name": NAME, "Email": EMAIL}
    chosen = draw(mac)
    record["macAddress"] = unique_mac() if chosen is None else chosen
    return record


def unique_mac() -> str:
    return next(_unique_macs).to_bytes(6, "big").hex(":")


class PromtoolBatch:
    """Collects every example's exposition; promtool checks them all in one run at the end."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, text: str) -> None:
        # Distinct names per example, so one file can hold them all; the label values are what is tested.
        self.texts.append(text.replace("cmx_connect_", f"cmx_connect_example{len(self.texts)}_"))

    def check(self) -> None:
        assert self.texts, "no example reached promtool"
        result = subprocess.run([require_tool("promtool"), "check", "metrics"], input="".join(self.texts),
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, (result.stdout + result.stderr)[:3000]


@pytest.fixture(scope="module")
def promtool_batch() -> Iterator[PromtoolBatch]:
    batch = PromtoolBatch()
    yield batch
    batch.check()


def serve(rsps: responses.RequestsMock, pages: list[list[dict[str, Any]]], page_size: int) -> None:
    """The pages as CMX sends them: JSON with ASCII escapes (so lone surrogates travel), nextIndex ahead."""
    index = 0
    for number, page in enumerate(pages):
        following = index + len(page) if number < len(pages) - 1 else 0
        add_page(rsps, index, page_size, json.dumps(envelope(page, following, page_size)).encode())
        index += len(page)


@settings(max_examples=300, deadline=None)
@given(all_records=st.lists(records(), max_size=40), page_size=st.integers(1, 12), cap=st.integers(1, 6),
       concurrency=st.sampled_from([1, 3]))
def test_any_records_give_a_valid_consistent_capped_exposition(all_records: list[dict[str, Any]], page_size: int,
                                                               cap: int, concurrency: int,
                                                               promtool_batch: PromtoolBatch) -> None:
    pages = [all_records[i:i + page_size] for i in range(0, len(all_records), page_size)]
    for page in pages:  # each page brings a new session, or the walk rightly takes the server for one ignoring index
        page[0]["macAddress"] = unique_mac()
    if len(all_records) % page_size == 0:
        pages.append([])  # a full last page is followed by an empty one, as on a real server
    with responses.RequestsMock() as rsps:
        serve(rsps, pages, page_size)
        counts = count_active_sessions(make_client().fetch_body, page_size=page_size, max_pages=100,
                                       max_label_values=cap, concurrency=concurrency)
    state = TargetState("venue", stale_after=60)
    state.record_success(counts, duration=0.1, requests=len(pages))
    text = state.exposition().decode("utf-8")

    series: dict[str, dict[str, float]] = {label: {} for label in LABELS}
    total = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.name.removeprefix("cmx_connect_active_sessions_by_")
            if label in series:
                value = sample.labels[label]
                assert value not in series[label], "one series per value"
                series[label][value] = sample.value
            elif sample.name == "cmx_connect_active_sessions":
                total = sample.value
    assert total == counts.total <= len(all_records)
    for label, values in series.items():
        assert values == counts.by_label[label], "the parser reads back what the exporter meant"
        assert sum(values.values()) == total, f"{label} does not sum to the total"
        assert len(values) <= cap
        assert all(0 < len(value) <= MAX_VALUE_LENGTH and value == value.strip() for value in values)
    check_measures(text, counts, first_of_each_session(pages))
    assert NAME not in text and EMAIL not in text
    assert not any(m.lower() in text.lower() for m in DUPLICATE_MACS)
    promtool_batch.add(text)


def first_of_each_session(pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records a poll counts: the first of each session key, every one without a key."""
    seen: set[int] = set()
    kept = []
    for page in pages:
        for rec, as_read in zip(page, as_records(page), strict=True):
            key = session_key(as_read)
            if key is None or key not in seen:
                kept.append(rec)
            if key is not None:
                seen.add(key)
    return kept


def exact_bytes(value: Any) -> int:
    """The rule for a byte count, written out apart from the tally's: a whole number from 0 to 2**63, or its digits."""
    if type(value) is int or (type(value) is float and value.is_integer()):
        return int(value) if 0 < value < 2**63 else 0
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value) if int(value) < 2**63 else 0
    return 0


def check_measures(text: str, counts: Counts, counted: list[dict[str, Any]]) -> None:
    """The histogram is cumulative and ends at the readable sessions; the bytes sum exactly."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    buckets = [(s.labels["le"], s.value) for s in families[DWELL.metric].samples if s.name.endswith("_bucket")]
    assert [le for le, _ in buckets] == [*(f"{b:g}" for b in DWELL_BUCKETS), "+Inf"]
    values = [value for _, value in buckets]
    assert values == sorted(values), "buckets never fall"
    assert values[-1] == counts.total - counts.unreadable_login_time, "+Inf holds every readable login time"
    sent_received = {s.labels[DIRECTION]: s.value for s in families[BYTES.metric].samples}
    for direction, key in BYTES_KEYS.items():
        exact = sum(exact_bytes(rec.get(key)) for rec in counted)
        assert getattr(counts, f"bytes_{direction}") == exact
        assert sent_received[direction] == float(exact), "the exposition shows the sum as a float can"
