"""The client against recorded-style answers: status codes, retries, bodies, transport errors."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest
import requests
import responses

from cmx_connect_exporter.cmx.client import MAX_COOKIE_BYTES, MAX_COOKIES, CmxClient
from cmx_connect_exporter.cmx.wire import Page, field
from cmx_connect_exporter.outcome import PollError
from cmx_pages import ENDPOINT, add_page, envelope, make_client, read_page, record
from exporter_process import free_port


def fetch(client: CmxClient) -> Page:
    return read_page(client.fetch_body(0, 10))


def fetch_error(rsps: responses.RequestsMock, **client_options: object) -> PollError:
    client = make_client(**client_options)
    with pytest.raises(PollError) as caught:
        fetch(client)
    return caught.value


@responses.activate
def test_page_is_parsed_and_auth_is_basic() -> None:
    add_page(responses.mock, 0, 10, envelope([record("00:11:22:33:44:55")], next_index="0"))
    page = fetch(make_client())
    assert [field("macAddress")(r) for r in page.records] == ["00:11:22:33:44:55"]
    assert page.next_index == 0
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(("password", "credentials"), [
    ("Grüße-€-🔑", "api:Grüße-€-🔑"),
    ("plain", "api:plain"),
    (None, "api:"),  # a user without a password, not the word "None"
])
@responses.activate
def test_basic_auth_sends_utf8_so_any_password_works(password: str | None, credentials: str) -> None:
    """RFC 7617's charset: a password outside Latin-1 must log in, not fail every poll."""
    add_page(responses.mock, 0, 10, envelope([]))
    make_client(password=password).fetch_body(0, 10)
    sent = responses.calls[0].request.headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(("status", "reason", "words"), [
    (401, "auth", "authentication failed (HTTP 401)"),
    (403, "auth", "access denied (HTTP 403)"),
    (404, "http", "HTTP 404"),
    (302, "http", "unexpected redirect"),
])
@responses.activate
def test_status_codes_map_to_reasons(status: int, reason: str, words: str) -> None:
    add_page(responses.mock, 0, 10, "CMX Error", status=status,
             headers={"Location": "https://elsewhere.test/"} if status == 302 else None)
    error = fetch_error(responses.mock)
    assert (error.reason, words in str(error)) == (reason, True)
    assert len(responses.calls) == 1, "auth and client errors are not retried"


@pytest.mark.parametrize(("configured_in", "credentials", "url"), [
    (None, "check CMX_USERNAME and the password", "set CMX_URL to"),
    ("target 'mall' in the targets file /etc/cmx/targets.yml",
     "check the username and password_file of target 'mall' in the targets file /etc/cmx/targets.yml",
     "set the url of target 'mall' in the targets file /etc/cmx/targets.yml to"),
])
@responses.activate
def test_auth_and_redirect_errors_name_where_the_target_is_configured(
        configured_in: str | None, credentials: str, url: str) -> None:
    add_page(responses.mock, 0, 10, "denied", status=401)
    assert credentials in str(fetch_error(responses.mock, configured_in=configured_in))
    responses.mock.reset()
    add_page(responses.mock, 0, 10, "moved", status=302, headers={"Location": "https://elsewhere.test/"})
    assert url in str(fetch_error(responses.mock, configured_in=configured_in))


@responses.activate
def test_server_errors_are_retried_then_reported() -> None:
    for _ in range(4):
        add_page(responses.mock, 0, 10, "CMX Error", status=503)
    client = make_client()
    with pytest.raises(PollError) as caught:
        fetch(client)
    assert caught.value.reason == "http"
    assert len(responses.calls) == 4, "one try and three retries"
    assert client.requests_made == 4


@responses.activate
def test_a_retry_that_succeeds_counts_both_requests() -> None:
    add_page(responses.mock, 0, 10, "busy", status=500)
    add_page(responses.mock, 0, 10, envelope([record()]))
    client = make_client()
    assert len(fetch(client).records) == 1
    assert client.requests_made == 2


@responses.activate
def test_short_retry_after_is_retried() -> None:
    add_page(responses.mock, 0, 10, "slow down", status=429, headers={"Retry-After": "1"})
    add_page(responses.mock, 0, 10, envelope([]))
    assert fetch(make_client(max_retry_wait=5)).records == []
    assert len(responses.calls) == 2


@pytest.mark.parametrize("headers", [{"Retry-After": "1"}, {}], ids=["retry-after", "backoff"])
@responses.activate
def test_no_wait_to_retry_runs_past_the_polls_deadline(headers: dict[str, str]) -> None:
    """The poll fails for what CMX answered, in time, rather than as a timeout at its deadline."""
    add_page(responses.mock, 0, 10, "busy", status=503, headers=headers)
    add_page(responses.mock, 0, 10, "busy", status=503, headers=headers)
    add_page(responses.mock, 0, 10, envelope([]))
    client = make_client(max_retry_wait=5)
    client.deadline = time.monotonic() + 0.5  # a wait of 1 s, or backoff's 1 s after the first retry, would pass it
    with pytest.raises(PollError) as failed:
        fetch(client)
    assert (failed.value.reason, str(failed.value)) == ("http", "CMX answered HTTP 503")
    assert len(responses.calls) == (1 if headers else 2)


@responses.activate
def test_long_retry_after_ends_the_request_and_is_reported() -> None:
    add_page(responses.mock, 0, 10, "slow down", status=429, headers={"Retry-After": "120"})
    error = fetch_error(responses.mock, max_retry_wait=5)
    assert (error.reason, error.retry_after) == ("http", 120)
    assert "HTTP 429" in str(error)
    assert len(responses.calls) == 1, "a Retry-After longer than the poll can wait is not slept through"


@pytest.mark.parametrize(("body", "words"), [
    ("CMX Error", "not JSON"),
    ("<html><body>Internal error</body></html>", "not JSON"),
    ('{"nextIndex": 0, "records": [{"macAddress": "00:11', "truncated JSON"),
    ("[1, 2, 3]", "no 'records' list"),
    ('{"nextIndex": 0}', "no 'records' list"),
    ('{"records": "none"}', "no 'records' list"),
    (b"\xff\xfe{", "not JSON"),
])
@responses.activate
def test_bad_bodies_are_bad_responses(body: str | bytes, words: str) -> None:
    add_page(responses.mock, 0, 10, body)
    error = fetch_error(responses.mock)
    assert error.reason == "bad_response"
    assert words in str(error)


@responses.activate
def test_null_records_mean_an_empty_page() -> None:
    add_page(responses.mock, 0, 10, '{"nextIndex": 0, "records": null}')
    assert fetch(make_client()).records == []


@responses.activate
def test_oversized_body_is_refused() -> None:
    add_page(responses.mock, 0, 10, b'{"records": [' + b" " * (2 << 20) + b"]}")
    error = fetch_error(responses.mock)
    assert (error.reason, "larger than" in str(error)) == ("bad_response", True)


@responses.activate
def test_a_body_with_its_length_is_read_as_sent() -> None:
    body = json.dumps(envelope([record(mac="aa:bb:cc:dd:ee:01")])).encode()
    add_page(responses.mock, 0, 10, body, headers={"Content-Length": str(len(body))})
    assert [field("macAddress")(r) for r in fetch(make_client()).records] == ["aa:bb:cc:dd:ee:01"]


@responses.activate
def test_a_cookie_cmx_sets_goes_back_with_the_next_pages() -> None:
    """As a browser would: a server that keeps a session per cookie then keeps one, not one per page."""
    add_page(responses.mock, 0, 10, envelope([]), headers={"Set-Cookie": "JSESSIONID=abc123; Path=/"})
    add_page(responses.mock, 10, 10, envelope([]))
    client = make_client()
    client.fetch_body(0, 10)
    client.fetch_body(10, 10)
    assert [call.request.headers.get("Cookie") for call in responses.calls] == [None, "JSESSIONID=abc123"]


@responses.activate
def test_a_cmx_that_sets_new_cookies_on_every_page_cannot_grow_the_jar_or_the_requests() -> None:
    """A browser's bounds: so many cookies, so large; a cookie already kept may still change, a huge one is not kept."""
    for page in range(3):
        cookies = [("Set-Cookie", f"c{page}_{n}=v; Path=/") for n in range(40)]
        if page == 2:
            cookies += [("Set-Cookie", "c0_0=changed; Path=/"), ("Set-Cookie", "huge=" + "x" * MAX_COOKIE_BYTES)]
        responses.get(ENDPOINT, json=envelope([]), headers=cookies,
                      match=[responses.matchers.query_param_matcher({"status": "active", "index": str(10 * page),
                                                                    "count": "10"})])
    add_page(responses.mock, 30, 10, envelope([]))
    client = make_client()
    for page in range(4):
        client.fetch_body(10 * page, 10)
    sent = dict(pair.split("=", 1) for pair in responses.calls[3].request.headers["Cookie"].split("; "))
    assert len(sent) == MAX_COOKIES
    assert sent["c0_0"] == "changed"
    assert "huge" not in sent and "c2_0" not in sent


def test_a_declared_length_too_large_is_refused_before_the_body_is_read() -> None:
    """Not read up to the limit first: the body never comes, so reading it would end in a timeout instead."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
    with pytest.raises(PollError) as caught:
        fetch_raw(head + b'{"records": [', then_wait=2.0, timeout=1.0)
    assert (caught.value.reason, str(caught.value)) == ("bad_response", "response larger than 1 MiB")


def test_a_length_http_client_cannot_read_still_bounds_the_body() -> None:
    """urllib3 reads "13, 13" as 13, http.client as no length at all: the body is read to 13 bytes, not to the end
    of a connection the server holds open (which would end in a timeout)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13, 13\r\n\r\n"
    assert fetch_raw(head + b'{"records": []}' + b" " * 100, then_wait=2.0, timeout=1.0) == b'{"records": ['


def test_a_url_requests_cannot_send_to_fails_the_poll_not_the_client() -> None:
    client = CmxClient("http://cmx.example:99999", username="u", password="p", timeout=1.0)
    with pytest.raises(PollError) as caught:
        client.fetch_body(0, 10)
    assert (caught.value.reason, str(caught.value)) == ("connection", "request to cmx.example failed (InvalidURL)")


@pytest.mark.parametrize(("exc", "reason"), [
    (requests.exceptions.ConnectTimeout(), "timeout"),
    (requests.exceptions.ReadTimeout(), "timeout"),
    (requests.exceptions.SSLError(), "connection"),
    (requests.exceptions.ConnectionError(), "connection"),
])
@responses.activate
def test_transport_errors_map_to_reasons(exc: Exception, reason: str) -> None:
    responses.get(ENDPOINT, body=exc)
    assert fetch_error(responses.mock).reason == reason


@pytest.mark.parametrize(("url", "words"), [
    (f"http://127.0.0.1:{free_port()}", "cannot connect to 127.0.0.1"),  # nothing listens there
    ("http://cmx.invalid", "cannot resolve cmx.invalid"),
])
def test_refused_and_unresolved_are_connection_errors_after_retries(url: str, words: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Over real sockets: urllib3 files a refused connection under its timeouts, the reason must not."""
    monkeypatch.setattr("cmx_connect_exporter.cmx.client.BACKOFF_FACTOR", 0)
    client = CmxClient(url, username="u", password="p", timeout=1)
    with pytest.raises(PollError) as caught:
        client.fetch_body(0, 10)
    assert (caught.value.reason, str(caught.value)) == ("connection", words)
    assert client.requests_made == 4, "one try and three retries"


@responses.activate
def test_no_message_carries_the_password_or_record_data() -> None:
    add_page(responses.mock, 0, 10, '{"records": [{"Email": "jane.doe@example.com", "macAddress": "00:1')
    error = fetch_error(responses.mock)
    for secret in ("s3cr3t-canary", "jane.doe", "00:1"):
        assert secret not in str(error)


def test_a_hanging_server_is_asked_once_and_times_out() -> None:
    """A read timeout is not retried: CMX is struggling, and asking again only adds load."""
    accepted: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        threading.Thread(target=lambda: accepted.extend(listener.accept()[0] for _ in range(8)), daemon=True).start()
        client = CmxClient(f"http://127.0.0.1:{listener.getsockname()[1]}", username="u", password="p", timeout=0.5)
        with pytest.raises(PollError) as caught:
            fetch(client)
        time.sleep(0.3)
    assert caught.value.reason == "timeout"
    assert (len(accepted), client.requests_made) == (1, 1)


def serve_once(answer: bytes, then_wait: float) -> tuple[socket.socket, threading.Thread]:
    """A raw server that sends ``answer`` to one client, then holds the connection open a while."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def reply() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)
            time.sleep(then_wait)

    thread = threading.Thread(target=reply, daemon=True)
    thread.start()
    return listener, thread


def fetch_raw(answer: bytes, then_wait: float, timeout: float) -> bytes:
    """``fetch_body`` of one page from a raw server that sends ``answer``, then holds the connection a while."""
    listener, thread = serve_once(answer, then_wait)
    with listener:
        client = CmxClient(f"http://127.0.0.1:{listener.getsockname()[1]}", username="u", password="p",
                           timeout=timeout)
        try:
            return client.fetch_body(0, 10)
        finally:
            thread.join(5)


@pytest.mark.parametrize(("then_wait", "reason"), [(2.0, "timeout"), (0.0, "connection")],
                         ids=["stalls-mid-body", "cut-short"])
def test_a_body_that_stops_part_way_is_a_clean_failure(then_wait: float, reason: str) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    with pytest.raises(PollError) as caught:
        fetch_raw(head + b'{"records": [', then_wait=then_wait, timeout=0.5)
    assert caught.value.reason == reason


@responses.activate
def test_an_unreadable_retry_after_is_retried_with_backoff() -> None:
    add_page(responses.mock, 0, 10, "busy", status=503, headers={"Retry-After": "soon"})
    add_page(responses.mock, 0, 10, envelope([]))
    assert fetch(make_client()).records == []
    assert len(responses.calls) == 2
