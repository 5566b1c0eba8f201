"""The CMX Connect HTTP client: one page per call, every failure turned into a PollError.

Messages are written here, never copied from exceptions or bodies, so no record
field, header or credential can reach a log line through them.
"""

from __future__ import annotations

import functools
import http.cookiejar
import logging
import math
import threading
import time
from collections.abc import Callable
from http.client import RemoteDisconnected
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError, ResponseError
from urllib3.util.retry import Retry

from cmx_connect_exporter.cmx.deadline import DeadlineAdapter
from cmx_connect_exporter.outcome import PollError

log = logging.getLogger(__name__)

CLIENTS_PATH = "/api/connect/v1/clients"

RETRIES = 3
BACKOFF_FACTOR = 0.5
BACKOFF_MAX = 5.0
READ_CHUNK = 256 * 1024
MAX_RETRY_AFTER_LENGTH = 32  # longer is no date and no sane number of seconds; int() of 5000 digits even fails
# What a browser keeps of one site at the least (RFC 6265, 6.1); a session cookie needs one.
MAX_COOKIES = 50
MAX_COOKIE_BYTES = 4096


def _closed_before_answer(error: Exception | None) -> bool:
    """A kept-alive connection that CMX closed, or reset, just as the request went out: no answer came."""
    return isinstance(error, ProtocolError) and any(
        isinstance(arg, RemoteDisconnected | ConnectionResetError | BrokenPipeError) for arg in error.args)


class _Retry(Retry):
    """urllib3's Retry that counts the retries it grants, and gives up on a long Retry-After.

    A Retry-After longer than ``max_wait`` is not slept through inside a poll: the
    response is handed back so the poller can defer the next poll instead. Nor is any wait
    that would end past the poll's deadline: the poll fails for what CMX answered, not as
    a timeout. A request that met a connection closed before any of the answer came back
    is asked once more, on a new one, although other read errors are not retried: CMX
    never answered it.
    """

    on_retry: Callable[[], None] | None = None
    max_wait: float = 0.0
    deadline: Callable[[], float] | None = None  # the poll's, as time.monotonic() tells it

    def new(self, **kw: Any) -> _Retry:
        retry = super().new(**kw)
        retry.on_retry, retry.max_wait, retry.deadline = self.on_retry, self.max_wait, self.deadline
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        if len(retry_after) > MAX_RETRY_AFTER_LENGTH:
            raise urllib3.exceptions.InvalidHeader("Retry-After too long to read")
        return super().parse_retry_after(retry_after)

    def get_retry_after(self, response: Any) -> float | None:
        """An unreadable Retry-After counts as none, so backoff applies, rather than failing the request."""
        try:
            return super().get_retry_after(response)
        except urllib3.exceptions.InvalidHeader:
            return None

    def increment(self, method: str | None = None, url: str | None = None, *args: Any, **kw: Any) -> _Retry:
        response = kw.get("response")
        if response is not None:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_wait:
                raise MaxRetryError(kw.get("_pool"), url or "", ResponseError("Retry-After too long"))
        granted: _Retry = self
        if _closed_before_answer(kw.get("error")) and not any(_closed_before_answer(h.error) for h in self.history):
            granted = self.new(read=(self.read or 0) + 1)
        retry = super(_Retry, granted).increment(method, url, *args, **kw)
        wait = (self.get_retry_after(response) if response is not None else None) or retry.get_backoff_time()
        if self.deadline is not None and time.monotonic() + wait > self.deadline():
            raise MaxRetryError(kw.get("_pool"), url or "", kw.get("error") or ResponseError("no time left to retry"))
        if self.on_retry is not None:
            self.on_retry()
        return retry


class _BoundedCookieJar(requests.cookies.RequestsCookieJar):
    """The cookies CMX sets, kept and sent back as a browser would, but at most ``MAX_COOKIES`` of at most
    ``MAX_COOKIE_BYTES`` each: a CMX that set new ones on every page would otherwise grow the worker's memory,
    and every request's ``Cookie`` header, without end. One past the limit is dropped; one already kept may
    still change."""

    def set_cookie(self, cookie: http.cookiejar.Cookie, *args: Any, **kwargs: Any) -> None:
        if len(cookie.name) + len(cookie.value or "") > MAX_COOKIE_BYTES:
            return
        with self._cookies_lock:  # re-entrant: the jar's own set_cookie takes it again
            kept = cookie.name in self._cookies.get(cookie.domain, {}).get(cookie.path, {})
            if kept or len(self) < MAX_COOKIES:
                super().set_cookie(cookie, *args, **kwargs)


class _Session(requests.Session):
    """A Session that never reads the body of a redirect, which is refused anyway, and keeps few cookies.

    Even with ``allow_redirects=False``, requests reads and inflates the whole body of a 3xx to
    prepare ``Response.next``, without bound: a compressed bomb there would exhaust memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cookies = _BoundedCookieJar()

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


class CmxClient:
    """Fetches pages of active sessions, gently: bounded retries, a deadline per request."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None,
        password: str | None,
        timeout: float,
        verify: bool | str = True,
        max_retry_wait: float = 30.0,
        configured_in: str | None = None,
    ) -> None:
        """``configured_in`` names where the user sets this CMX's options, for the errors that ask for a fix:
        None for the CMX_* settings, else its target in the targets file."""
        self._configured_in = configured_in
        self._endpoint = url.rstrip("/") + CLIENTS_PATH
        self._host = urlsplit(url).hostname or url
        self._timeout = timeout
        self.deadline = math.inf  # the poll's, in time.monotonic(): no retry waits past it
        self._lock = threading.Lock()
        self._requests = 0
        retry = _Retry(  # a read timeout means CMX is struggling: asking again would only add load
            total=RETRIES,
            read=0,
            other=0,
            backoff_factor=BACKOFF_FACTOR,
            backoff_max=BACKOFF_MAX,
            backoff_jitter=0.2,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            raise_on_status=False,
            redirect=0,
        )
        retry.on_retry, retry.max_wait, retry.deadline = self._count_request, max_retry_wait, lambda: self.deadline
        session = _Session()
        session.mount("http://", DeadlineAdapter(max_retries=retry, pool_maxsize=8))
        session.mount("https://", DeadlineAdapter(max_retries=retry, pool_maxsize=8))
        if username is not None:  # as UTF-8 bytes (RFC 7617); requests would encode str as Latin-1 or fail
            session.auth = HTTPBasicAuth(username.encode(), (password or "").encode())
        session.verify = verify
        session.trust_env = False  # no netrc or proxy variables: what is configured is what is sent
        session.headers["Accept"] = "application/json"
        session.headers["User-Agent"] = "cmx-connect-exporter"
        self._session = session
        if verify is False:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def close(self) -> None:
        """Its connections are closed; a worker does this for a target whose options changed."""
        self._session.close()

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._requests

    def _count_request(self) -> None:
        with self._lock:
            self._requests += 1

    @functools.cached_property
    def _page_request(self) -> requests.PreparedRequest:
        """The request each page's copies, prepared once (headers, credentials, the URL), as preparing one is
        Python work under the GIL the counting needs. Prepared in the first poll, not before: a URL requests
        refuses (a port out of range, a host it cannot encode) then fails the poll, as any unsendable request
        does, rather than the worker. Its ``Cookie`` header is left unset, so each copy takes the jar's."""
        return self._session.prepare_request(requests.Request("GET", self._endpoint))

    def fetch_body(self, index: int, count: int, since: int | None = None) -> bytes:
        """The raw body of one page of active sessions; a ``wire.PageReader`` reads it. Raises PollError.

        With ``since`` (epoch seconds), the page is of every session, active or not, whose last
        login is at ``since`` or later. Fetching and decoding are apart so that concurrent
        fetchers carry only bytes, and the decoding, which holds the GIL, happens in one thread.
        """
        params = {"status": "active", "index": str(index), "count": str(count)}
        if since is not None:
            params.update(status="all", start=str(since))
        self._count_request()
        try:
            request = self._page_request.copy()
            request.url = f"{self._page_request.url}?{urlencode(params)}"
            request.prepare_cookies(self._session.cookies)  # any that CMX set since
            with self._session.send(request, timeout=self._timeout, stream=True, allow_redirects=False) as response:
                self._check_status(response)
                body = self._read_body(response, max_bytes=max(1 << 20, count * 16384))
        except requests.RequestException as exc:
            raise self._transport_error(exc) from None
        except urllib3.exceptions.ReadTimeoutError:  # the body did not come whole within the read timeout
            raise PollError("timeout", f"{self._host} did not send a page within {self._timeout:g} s") from None
        except urllib3.exceptions.HTTPError:  # the body was cut short or broken
            raise PollError("connection", f"the connection to {self._host} broke while reading a page") from None
        return body

    def _check_status(self, response: requests.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (401, 403):
            what = "authentication failed" if status == 401 else "access denied"
            check = self._setting("username and password_file", "CMX_USERNAME and the password")
            raise PollError("auth", f"{what} (HTTP {status}); check {check}")
        if 300 <= status < 400:
            raise PollError("http", f"unexpected redirect (HTTP {status}); set {self._setting('url', 'CMX_URL')} "
                                    "to the address CMX answers on, credentials are never sent on to another address")
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if status == 429:
            raise PollError("http", "rate limited by CMX (HTTP 429)", retry_after)
        raise PollError("http", f"CMX answered HTTP {status}", retry_after)

    def _setting(self, keys: str, variables: str) -> str:
        """What the user changes to fix this CMX: the CMX_* ``variables``, or the ``keys`` of its target."""
        return variables if self._configured_in is None else f"the {keys} of {self._configured_in}"

    @staticmethod
    def _read_body(response: requests.Response, max_bytes: int) -> bytes:
        """Read up to ``max_bytes``; the connection's deadline ends a trickle.

        A body sent as it is, with its length, is read in one call, as each read in chunks costs
        Python work in urllib3 and http.client, under the GIL the counting needs. Any other body,
        compressed or without a length, is read in chunks and stopped as soon as it is too large:
        its size is known only as it inflates. Chunks are joined once at the end, into a buffer
        of the exact size: a body grown in place moves as it grows, and with pages read in
        parallel that fragments the heap.
        """
        raw = response.raw
        length = raw.length_remaining  # urllib3's reading of Content-Length: None when absent or invalid
        if length is not None and "Content-Encoding" not in response.headers:
            if length > max_bytes:
                raise _too_large(max_bytes)
            body = raw.read(length)  # never more, whatever http.client made of the header (it reads "10, 10" as none)
            if len(body) < length:  # the connection closed early
                raise ProtocolError("the body ended before its Content-Length")
            return body
        chunks: list[bytes] = []
        size = 0
        while chunk := raw.read1(READ_CHUNK, decode_content=True):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
        return b"".join(chunks)

    def _transport_error(self, exc: requests.RequestException) -> PollError:
        cause = exc.args[0].reason if exc.args and isinstance(exc.args[0], MaxRetryError) else None
        if isinstance(exc, requests.exceptions.SSLError):
            return PollError("connection", f"TLS handshake with {self._host} failed; check the certificate "
                                           f"or set {self._setting('ca_bundle', 'CMX_CA_BUNDLE')}")
        # Before the timeouts: urllib3 makes NewConnectionError (refused, unresolved) a ConnectTimeoutError.
        if isinstance(cause, NameResolutionError):
            return PollError("connection", f"cannot resolve {self._host}")
        if isinstance(cause, NewConnectionError):
            return PollError("connection", f"cannot connect to {self._host}")
        if isinstance(exc, requests.Timeout) or isinstance(cause, urllib3.exceptions.TimeoutError):
            return PollError("timeout", f"no answer from {self._host} within {self._timeout:g} s")
        if isinstance(exc, requests.ConnectionError):
            return PollError("connection", f"cannot connect to {self._host} or the connection broke")
        return PollError("connection", f"request to {self._host} failed ({type(exc).__name__})")


def _too_large(max_bytes: int) -> PollError:
    return PollError("bad_response", f"response larger than {max_bytes >> 20} MiB")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, in either of its forms."""
    if not value:
        return None
    try:
        return _Retry().parse_retry_after(value)
    except urllib3.exceptions.InvalidHeader:
        return None
