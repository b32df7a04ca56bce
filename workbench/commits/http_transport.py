"""HTTP transport of the commits clients (client side only): persistent connections, credentials, and error translation.

The clients in :mod:`workbench.commits.client` never touch sockets; they call
:meth:`HttpTransport.request` with a method, a path below the server's base URL and headers, and
get an :class:`HttpResponse` back, or one of the errors below. Every error is a ``CommitsError``
carrying structured fields::

    CommitsError
    +-- CommitsHttpError           the server answered with an error status (fields: status, body, method, url)
    |   +-- CommitBadRequest       400: bad input (missing author, non-integer version, invalid payload...)
    |   +-- CommitUnauthorized     401 / 403: the server wants (other) credentials for writes
    |   +-- CommitNotFound         404: no such key or version ("Key not found")
    |   +-- HttpCommitConflict     409: the version was not previous + 1 (also a model.CommitConflict:
    |                              key, expected_version, provided_version)
    +-- CommitServerUnreachable    no answer at all: refused, reset, timed out (fields: url, reason)

Each thread gets a connection of its own (``http.client`` connections are not thread-safe) and
keeps it alive between requests, so a client shared by many threads costs one connection per thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote, unquote, urlencode, urlsplit

from workbench.commits.model import CommitConflict
from workbench.errors import CommitsError, ConfigurationError

#: seconds a request may take before the client gives up
DEFAULT_TIMEOUT = 10.0

USER_AGENT = "workbench-commits"


class CommitsHttpError(CommitsError):
    """The server answered with an error status; ``status`` and ``body`` (text) say what it said.

    Fields: ``status``, ``body``, ``method``, ``url``. ``str()`` is one line a person can act on::

        HTTP 404 Not Found from GET http://127.0.0.1:8080/diary/nope: Key not found
    """

    status: int
    body: str

    def __str__(self) -> str:
        detail = _error_detail(self.fields.get("body") or "")
        return f"{self.message}: {detail}" if detail else self.message


def _error_detail(body: str) -> str:
    """What a person needs from an error body: the ``error`` of a JSON body, else the text."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return document["error"]
    return body


class CommitBadRequest(CommitsHttpError):
    """400: the server refused the request as malformed (see ``body``)."""


class CommitUnauthorized(CommitsHttpError):
    """401 or 403: writes need credentials (a token or basic auth) the client did not give."""


class CommitNotFound(CommitsHttpError):
    """404: the key (or that version of it) does not exist."""


class HttpCommitConflict(CommitConflict, CommitsHttpError):
    """409: the version posted was not the key's current version + 1.

    A :class:`~workbench.commits.model.CommitConflict` (fields ``key``, ``expected_version``,
    ``provided_version``) that is also a ``CommitsHttpError`` (``status``, ``body``, ``method``, ``url``),
    so code written against any ``CommitStorage`` catches it the same way.
    """

    def __init__(self, key: str, expected_version: int, provided_version: int, *, status: int = 409,
                 body: str = "", method: str = "POST", url: str = "") -> None:
        super().__init__(key, expected_version, provided_version)
        extra = {"status": status, "body": body, "method": method, "url": url}
        self.fields.update(extra)
        for name, value in extra.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return (f"conflict on key {self.fields['key']!r}: the next version is "
                f"{self.fields['expected_version']}, not {self.fields['provided_version']} "
                f"(HTTP 409 from {self.fields['method']} {self.fields['url']})")

    def __reduce__(self):  # the fields travel, like every WorkbenchError
        f = self.fields
        return (_rebuild_conflict, (f["key"], f["expected_version"], f["provided_version"],
                                    f["status"], f["body"], f["method"], f["url"]))


def _rebuild_conflict(key: str, expected: int, provided: int, status: int, body: str, method: str,
                      url: str) -> HttpCommitConflict:
    return HttpCommitConflict(key, expected, provided, status=status, body=body, method=method, url=url)


class CommitServerUnreachable(CommitsError):
    """No HTTP answer: the connection was refused, reset or timed out (fields: url, reason, and
    ``status`` None and ``body`` "" like every error of the client, since nothing was answered)."""

    url: str
    reason: str

    def __str__(self) -> str:
        return self.message  # it already names the URL and the reason


@dataclass(frozen=True)
class HttpResponse:
    """One successful answer: status, headers (lower-case names) and the body as bytes."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def json(self) -> Any:
        """The body parsed as JSON (a ``CommitsError`` when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise CommitsError("the server answered with something that is not JSON",
                               body=self.body[:200].decode("utf-8", "replace")) from exc


def encode_key(key: str) -> str:
    """A key as one URL path segment: every reserved character escaped, ``/`` included.

    ``encode_key("app/db url")`` is ``"app%2Fdb%20url"``: a key is never split into path
    segments, and unicode keys travel as UTF-8.
    """
    if not isinstance(key, str) or not key:
        raise ConfigurationError("a commit key is a non-empty string", key=key)
    return quote(key, safe="")


@dataclass(frozen=True)
class ServerAddress:
    """A parsed server URL: where to connect, the path prefix, and credentials (never shown)."""

    scheme: str
    host: str
    port: int
    prefix: str                     # "" or "/diary" (no trailing slash)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> "ServerAddress":
        """``http://[user:pw@]host[:port][/prefix]`` -> address; anything else is a ConfigurationError."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("a commits server URL looks like http://HOST:PORT[/PREFIX]",
                                     url=_redact(url))
        if parts.query or parts.fragment:
            raise ConfigurationError("a commits server URL has no query or fragment", url=_redact(url))
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigurationError("bad port in commits server URL", url=_redact(url)) from exc
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None)

    @property
    def url(self) -> str:
        """The base URL without credentials, e.g. ``http://127.0.0.1:8080/diary``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


#: the error class of each status that has one of its own
_STATUS_ERRORS: dict[int, type[CommitsHttpError]] = {
    400: CommitBadRequest,
    401: CommitUnauthorized,
    403: CommitUnauthorized,
    404: CommitNotFound,
}


class HttpTransport:
    """Sends requests to one commits server over keep-alive connections (one per thread).

    ::

        transport = HttpTransport("http://127.0.0.1:8080/diary", token="s3cret")
        response = transport.request("GET", "/foo/meta")
        response.json()["version"]

    ``token`` is sent as ``Authorization: Bearer TOKEN``; credentials in the URL
    (``http://user:pw@host/...``) as basic auth. Errors are translated here, at the boundary: the
    callers see ``CommitsHttpError`` subclasses and ``CommitServerUnreachable``, never
    ``http.client`` or socket exceptions.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None) -> None:
        self.address = ServerAddress.parse(url)
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._headers = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif self.address.username is not None:
            pair = f"{self.address.username}:{self.address.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")

    @property
    def base_url(self) -> str:
        return self.address.url

    def url_of(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """The full URL (without credentials) of ``path`` below the base URL."""
        return self.address.url + path + (f"?{urlencode(query)}" if query else "")

    # -- connections ----------------------------------------------------------------------------
    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it has served a request before."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        if self._closed:
            raise CommitsError("the client is closed", url=self.address.url)
        factory = http.client.HTTPSConnection if self.address.scheme == "https" else http.client.HTTPConnection
        connection = factory(self.address.host, self.address.port, timeout=self.timeout)
        with self._lock:
            # Threads that ended left their connections open: close those while we are here.
            finished = [c for thread, c in self._connections if not thread.is_alive()]
            self._connections = [(thread, c) for thread, c in self._connections if thread.is_alive()]
            self._connections.append((threading.current_thread(), connection))
        for stale in finished:
            stale.close()
        self._local.connection = connection
        return connection, False

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()
            with self._lock:
                self._connections = [(t, c) for t, c in self._connections if c is not connection]

    @property
    def open_connections(self) -> int:
        """How many kept-alive connections this transport holds (one per thread that used it)."""
        with self._lock:
            return len(self._connections)

    # -- requests -------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                query: Mapping[str, str] | None = None) -> HttpResponse:
        """Send one request; a 2xx answer comes back, anything else is raised as a CommitsError."""
        target = self.address.prefix + path + (f"?{urlencode(query)}" if query else "")
        all_headers = {**self._headers, **(headers or {})}
        for attempt in (1, 2):
            connection, reused = self._connection()
            try:
                connection.request(method, target, body=body, headers=all_headers)
                raw = connection.getresponse()
                payload = raw.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop_connection()
                # A kept-alive connection the server closed while idle fails on first use: try once
                # more on a fresh one. Safe for POST too: versions make a repeated commit a 409,
                # never a second commit.
                if reused and attempt == 1:
                    continue
                raise self._unreachable(exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise self._unreachable(exc) from exc
            if raw.getheader("Connection", "").lower() == "close" or raw.will_close:
                self._drop_connection()
            response = HttpResponse(raw.status, {k.lower(): v for k, v in raw.getheaders()}, payload)
            if 200 <= raw.status < 300:
                return response
            raise self.error_for(method, self.url_of(path, query), response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _unreachable(self, exc: BaseException) -> CommitServerUnreachable:
        if isinstance(exc, (socket.timeout, TimeoutError)):
            reason = f"no answer within {self.timeout:g}s"
        else:
            reason = str(exc) or type(exc).__name__
        return CommitServerUnreachable(f"cannot reach the commits server at {self.address.url}: {reason}",
                                       url=self.address.url, reason=reason, status=None, body="")

    def error_for(self, method: str, url: str, response: HttpResponse) -> CommitsHttpError:
        """The error a non-2xx answer stands for (409 becomes the conflict error, with its fields)."""
        text = response.body.decode("utf-8", "replace").strip()
        reason = http.client.responses.get(response.status, "error")
        if response.status == 409:
            conflict = _conflict_fields(response.body)
            if conflict is not None:
                return HttpCommitConflict(*conflict, status=409, body=text, method=method, url=url)
        error_class = _STATUS_ERRORS.get(response.status, CommitsHttpError)
        return error_class(f"HTTP {response.status} {reason} from {method} {url}",
                           status=response.status, body=text, method=method, url=url)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every thread's connection; requests after this raise. Idempotent."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _thread, connection in connections:
            connection.close()
        self._local = threading.local()

    @property
    def closed(self) -> bool:
        return self._closed


def _conflict_fields(body: bytes) -> tuple[str, int, int] | None:
    """``{"conflict": {"key", "expectedVersion", "providedVersion"}}`` -> (key, expected, provided)."""
    try:
        conflict = json.loads(body)["conflict"]
        return str(conflict["key"]), int(conflict["expectedVersion"]), int(conflict["providedVersion"])
    except (ValueError, KeyError, TypeError):
        return None


__all__ = [
    "DEFAULT_TIMEOUT",
    "CommitBadRequest",
    "CommitNotFound",
    "CommitServerUnreachable",
    "CommitUnauthorized",
    "CommitsHttpError",
    "HttpCommitConflict",
    "HttpResponse",
    "HttpTransport",
    "ServerAddress",
    "encode_key",
]
