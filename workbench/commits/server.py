"""Rainer's HTTP API over a commit storage, on tornado, with RainerServlet's semantics.

Routes (below ``prefix``, e.g. ``/diary``):

=====================================  ==========================================================
``GET /``                              ``{key: metadata}`` of every non-empty head, read from the
                                       storage; ``?all=yes`` adds tombstones;
                                       ``?payload_utf8=yes`` / ``?payload_base64=yes`` add each
                                       payload (tombstones never have one); each flag is a boolean
                                       (yes/no, true/false, 1/0), anything else is a 400
``GET /:key`` / ``GET /:key/:version``  the payload bytes: ``text/plain; charset=UTF-8`` when they
                                       are UTF-8, else ``application/octet-stream``; a tombstone
                                       answers 200 with an empty body (its headers say
                                       ``X-Rainer-Empty: Yes``)
``GET /:key/meta``, ``/:key/:version/meta``  the metadata JSON
``POST /:key/:version``                save the body as that version; headers ``X-Rainer-Author``
                                       (required), ``X-Rainer-Comment``, ``X-Rainer-Empty``
                                       (yes/no, true/false, 1/0; a tombstone needs an empty body),
                                       ``X-Rainer-Modified-Time`` (ISO 8601), and ``X-Rainer-Key`` /
                                       ``X-Rainer-Version``, which must match the URL when given;
                                       answers the metadata JSON
=====================================  ==========================================================

Metadata objects carry ``empty`` (true or false), as Rainer's ``CommitMetadata.asMap``. Every
commit answer carries ``X-Rainer-Key``, ``X-Rainer-Version``, ``X-Rainer-Author``,
``X-Rainer-Comment``, ``X-Rainer-Modified-Time`` and ``X-Rainer-Empty`` (``Yes``/``No``).

Header values are taken verbatim, as RainerServlet does: ``raise 10%20`` stays ``raise 10%20``.
Non-ASCII text travels as raw UTF-8 both ways (a request value that is not UTF-8 is read as
ISO-8859-1, as Jetty reads it). A header cannot carry a line break, so an answer's header shows
each control character of a stored comment as a space (the metadata JSON has the exact text).
One extension, for clients that must send such text: with ``X-Rainer-Header-Encoding: percent``
the request's X-Rainer-* values are percent-encoded UTF-8 and decoded before they are stored.

Errors: 404 ``Key not found`` (text) for a missing key or version; 409
``{"conflict": {"key", "expectedVersion", "providedVersion"}}``; 400 / 401 / 413 / 503
``{"error": message, ...fields}``. Bad input never produces a 500.

Reads of one key are served from a :class:`~workbench.commits.keeper.CommitMirror` when one is
given and holds it (``X-Rainer-Cached: Yes``); the listing always comes from the storage, so it
never lags behind what a read of the key answers. Writes may require a :class:`TokenAuth` or
:class:`BasicAuth`.

::

    with CommitServer(SqlCommitStorage("sqlite:///c.db").start(), prefix="/diary") as server:
        print(server.url)   # http://127.0.0.1:PORT/diary
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, TypeVar
from urllib.parse import unquote

import tornado.web

from workbench.commits.model import Commit, CommitConflict, CommitMetadata, InvalidCommit, format_mtime, now, \
    parse_mtime
from workbench.commits.storage import CommitStorage
from workbench.errors import CommitsError, ConfigurationError
from workbench.httpserver import HttpServer, ServerBindError
from workbench.servers import Address, ServerLifecycle

if TYPE_CHECKING:
    from workbench.commits.keeper import CommitMirror

log = logging.getLogger(__name__)

__all__ = ["CommitServer", "TokenAuth", "BasicAuth", "WriteAuth", "auth_from_spec", "encode_header",
           "decode_header", "commit_header_values", "DEFAULT_MAX_BODY", "meta_document", "commit_document",
           "parse_flag", "HEADER_ENCODING", "PAYLOAD_TEXT", "PAYLOAD_BINARY"]

#: the largest accepted POST body: ZooKeeper's default 1 MiB znode limit holds a base64 payload
#: of about 750 KiB, so a bigger commit could be stored but never published
DEFAULT_MAX_BODY = 512 * 1024

T = TypeVar("T")

#: the request header by which a client says its X-Rainer-* values are percent-encoded UTF-8
HEADER_ENCODING = "X-Rainer-Header-Encoding"
#: the content types of a payload, as RainerServlet's textIfPossible chooses them
PAYLOAD_TEXT = "text/plain; charset=UTF-8"
PAYLOAD_BINARY = "application/octet-stream"

# what tornado (and RFC 9110) refuses in a header value: control characters but tab, and DEL
_HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_flag(text: str) -> bool | None:
    """RainerServlet's ``yesNo``: yes/true/1 -> True, no/false/0 -> False (any case), else None."""
    return {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}.get(text.lower())


def encode_header(value: str) -> str:
    """``value`` as tornado sends it for raw UTF-8 on the wire (the bytes seen as ISO-8859-1), each
    control character a space: a header has no way to carry a line break."""
    return _HEADER_UNSAFE.sub(" ", value).encode("utf-8").decode("latin-1")


def decode_header(value: str, percent: bool = False) -> str:
    """A request header's text: its bytes (seen by tornado as ISO-8859-1) read as UTF-8 when they
    are UTF-8, else kept as ISO-8859-1 text, as Jetty reads them. Nothing else is decoded, unless
    ``percent`` (the client sent ``X-Rainer-Header-Encoding: percent``): then percent-encoded
    UTF-8 is decoded, strictly (UnicodeDecodeError on bad UTF-8)."""
    try:
        value = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return unquote(value, errors="strict") if percent else value


def meta_document(meta: CommitMetadata) -> dict[str, Any]:
    """The ``GET .../meta`` object, in the seed's field order (author, key, version, mtime, comment),
    then ``empty``, which Rainer's metadata always has."""
    return {"author": meta.author, "key": meta.key, "version": meta.version, "mtime": format_mtime(meta.mtime),
            "comment": meta.comment, "empty": meta.empty}


def commit_document(meta: CommitMetadata) -> dict[str, Any]:
    """The metadata of a POST answer and of a listing entry: the seed's alphabetical order, then
    ``empty`` (true or false), as Rainer's ``CommitMetadata.asMap``."""
    document = meta.to_json()
    document["empty"] = meta.empty
    return document


@functools.lru_cache(maxsize=4096)
def commit_header_values(meta: CommitMetadata) -> tuple[tuple[str, str], ...]:
    """The X-Rainer-* headers describing a commit (cached: hot keys are read again and again)."""
    return (("X-Rainer-Key", encode_header(meta.key)),
            ("X-Rainer-Version", str(meta.version)),
            ("X-Rainer-Author", encode_header(meta.author)),
            ("X-Rainer-Comment", encode_header(meta.comment)),
            ("X-Rainer-Modified-Time", format_mtime(meta.mtime)),
            ("X-Rainer-Empty", "Yes" if meta.empty else "No"))


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- write authentication -----------------------------------------------------------------------------
class WriteAuth:
    """Decides whether a request may write. Subclasses implement ``allows(headers)``."""

    #: the WWW-Authenticate challenge sent with a 401
    challenge = 'Basic realm="rainer"'

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"  # the secret is never shown

    def allows(self, headers: Mapping[str, str]) -> bool:
        raise NotImplementedError


class TokenAuth(WriteAuth):
    """Writes need ``Authorization: Bearer TOKEN`` (or ``X-Rainer-Token: TOKEN``)."""

    challenge = 'Bearer realm="rainer"'

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigurationError("the write token must not be empty")
        self._token = token.encode("utf-8")

    def allows(self, headers: Mapping[str, str]) -> bool:
        offered = headers.get("X-Rainer-Token", "")
        authorization = headers.get("Authorization", "")
        if authorization[:7].lower() == "bearer ":
            offered = authorization[7:].strip()
        return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), self._token)


class BasicAuth(WriteAuth):
    """Writes need HTTP basic auth with one of ``users`` (name -> password)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        if not users:
            raise ConfigurationError("basic auth needs at least one user")
        self._users = {name: password.encode("utf-8") for name, password in users.items()}

    def __repr__(self) -> str:
        return f"<BasicAuth: {', '.join(sorted(self._users))}>"  # the users, never their passwords

    def allows(self, headers: Mapping[str, str]) -> bool:
        authorization = headers.get("Authorization", "")
        if authorization[:6].lower() != "basic ":
            return False
        try:
            name, _, password = base64.b64decode(authorization[6:].strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):  # binascii.Error, and non-ASCII text in the header
            return False
        expected = self._users.get(name)
        # compare even for unknown users, so timing does not tell which names exist
        return hmac.compare_digest(password.encode("utf-8"), expected or b"\0") and expected is not None


def auth_from_spec(spec: str | None) -> WriteAuth | None:
    """``"token:SECRET"`` -> TokenAuth, ``"basic:USER:PASSWORD"`` -> BasicAuth, None -> None."""
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "token" and rest:
        return TokenAuth(rest)
    if kind == "basic" and ":" in rest:
        user, _, password = rest.partition(":")
        return BasicAuth({user: password})
    raise ConfigurationError("auth must be token:SECRET or basic:USER:PASSWORD", spec=kind + ":...")


# -- handlers ------------------------------------------------------------------------------------------
class _HttpProblem(Exception):
    """An answer other than 200, raised inside a handler."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json",
                 headers: Mapping[str, str] | None = None, message: str = "") -> None:
        super().__init__(status)
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = dict(headers or {})
        self.message = message


def _bad_request(message: str, status: int = 400, **fields: Any) -> _HttpProblem:
    return _HttpProblem(status, _compact({"error": message, **{k: _plain(v) for k, v in fields.items()}}),
                        message=message)


def _shorten(text: str | None, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, non-printable ones escaped: safe for one log line."""
    text = (text or "").encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


_NOT_FOUND = b"Key not found"


class _Handler(tornado.web.RequestHandler):
    """Shared plumbing: error answers, commit headers, running storage calls off the loop."""

    server: CommitServer

    def initialize(self, server: CommitServer) -> None:
        self.server = server

    def set_default_headers(self) -> None:
        self.clear_header("Server")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        if not self.server.storage.blocking:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self.server.executor, function, *args)

    def send_problem(self, problem: _HttpProblem) -> None:
        if problem.message:
            # a refused request is worth one line (never a traceback): who sent what, and why not
            request = self.request
            log.info("%d %s %s from %s: %s", problem.status, request.method, _shorten(request.uri),
                     request.remote_ip, _shorten(problem.message))
        self.clear()
        self.set_status(problem.status)
        self.set_header("Content-Type", problem.content_type)
        for name, value in problem.headers.items():
            self.set_header(name, value)
        self.finish(problem.body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # tornado's own errors (bad URL encoding, unsupported method...) and anything unexpected:
        # a short JSON message, never a traceback page.
        self.set_header("Content-Type", "application/json")
        self.finish(_compact({"error": self._reason}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            # tornado's own refusals (bad percent-encoding, unsupported method): one line, like ours
            log.info("%d %s %s from %s: %s", value.status_code, self.request.method, _shorten(self.request.uri),
                     self.request.remote_ip, _shorten(value.log_message or value.reason or ""))
        else:
            super().log_exception(typ, value, tb)

    def commit_headers(self, meta: CommitMetadata) -> None:
        for name, value in commit_header_values(meta):
            self.set_header(name, value)

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except _HttpProblem as problem:
            self.send_problem(problem)
        except CommitConflict as conflict:
            self.send_problem(_HttpProblem(409, _compact({"conflict": {
                "key": conflict.fields["key"], "expectedVersion": conflict.fields["expected_version"],
                "providedVersion": conflict.fields["provided_version"]}})))
        except InvalidCommit as invalid:
            self.send_problem(_bad_request(invalid.message, **invalid.fields))
        except CommitsError as error:
            self.send_problem(_bad_request(error.message, **error.fields))
        except Exception as exc:
            if _is_database_unavailable(exc):
                log.warning("storage unavailable: %s", exc)
                self.send_problem(_bad_request("storage unavailable", status=503))
                return
            raise

    def parse_version(self, text: str) -> int:
        if not re.fullmatch(r"[0-9]{1,18}", text) or int(text) < 1:
            raise _bad_request("version must be a positive integer", version=text)
        return int(text)

    async def find(self, key: str, version: int | None) -> tuple[Commit, bool]:
        """The commit asked for and whether it came from the mirror; 404 when absent."""
        mirror = self.server.mirror
        if mirror is not None:
            cached = mirror.value.get(key)
            if cached is not None and (version is None or cached.version == version):
                return cached, True
        commit = await self.call(self.server.storage.get, key, version)
        if commit is None:
            raise _HttpProblem(404, _NOT_FOUND, "text/plain; charset=utf-8")
        return commit, False

    async def find_and_describe(self, key: str, version: str | None) -> Commit:
        """``find`` from URL parts, with the commit's X-Rainer-* headers set on the answer."""
        commit, cached = await self.find(key, None if version is None else self.parse_version(version))
        self.commit_headers(commit.meta)
        if cached:
            self.set_header("X-Rainer-Cached", "Yes")
        return commit


class _ListHandler(_Handler):
    async def get(self) -> None:
        await self.run(self._list)

    async def _list(self) -> None:
        def flag(name: str) -> bool:
            # RainerServlet reads the first value; a missing flag is false, a non-boolean one a 400
            values = self.get_query_arguments(name)
            value = parse_flag(values[0]) if values else False
            if value is None:
                raise _bad_request(f"Invalid '{name}' parameter (should be boolean)", parameter=name,
                                   value=values[0])
            return value

        include_all, utf8, b64 = flag("all"), flag("payload_utf8"), flag("payload_base64")
        # Always the storage, never the mirror: a mirror that lags would list less than a read of
        # one key answers, and the listing is what clients take as the set of keys.
        storage = self.server.storage
        heads = await self.call(storage.heads if include_all else storage.heads_non_empty)
        listing: dict[str, Any] = {}
        for key in sorted(heads):
            commit = heads[key]
            document = commit_document(commit.meta)
            if commit.payload is not None:
                if utf8:
                    try:
                        document["payload_utf8"] = commit.payload.decode("utf-8")
                    except UnicodeDecodeError:
                        document["payload_utf8"] = None  # not text: ask for payload_base64
                if b64:
                    document["payload_base64"] = base64.b64encode(commit.payload).decode("ascii")
            listing[key] = document
        self.set_header("Content-Type", "application/json")
        self.finish(_compact(listing))


class _MetaHandler(_Handler):
    async def get(self, key: str, version: str | None = None) -> None:
        async def work() -> None:
            commit = await self.find_and_describe(key, version)
            self.set_header("Content-Type", "application/json")
            self.finish(_compact(meta_document(commit.meta)))

        await self.run(work)


@tornado.web.stream_request_body
class _CommitHandler(_Handler):
    """GET a payload; POST a new version (the body is streamed so oversized ones stop early)."""

    def prepare(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        if self.request.method != "POST":
            return
        auth = self.server.auth
        if auth is not None and not auth.allows(self.request.headers):
            self.send_problem(_HttpProblem(401, _compact({"error": "authentication required"}),
                                           headers={"WWW-Authenticate": auth.challenge},
                                           message="authentication required"))
            return
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > self.server.max_body):
            self.send_problem(_bad_request("request body too large", status=413,
                                           max_body=self.server.max_body, content_length=length))

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._size += len(chunk)
        if self._size > self.server.max_body:
            # a chunked upload over the limit: answer now and hang up, rather than read the rest
            self._too_large, self._chunks = True, []
            self.send_problem(_bad_request("request body too large", status=413, max_body=self.server.max_body))
            self.request.connection.close()
        else:
            self._chunks.append(chunk)

    async def get(self, key: str, version: str | None = None) -> None:
        async def work() -> None:
            commit = await self.find_and_describe(key, version)
            # A tombstone is a commit like any other: 200 and an empty payload, as RainerServlet
            # answers (JVM clients and pyrainer's get_value read a 404 as "no such key").
            payload = commit.payload or b""
            self.set_header("Content-Type", PAYLOAD_TEXT if _is_utf8(payload) else PAYLOAD_BINARY)
            self.finish(payload)

        await self.run(work)

    async def post(self, key: str, version: str | None = None) -> None:
        async def work() -> None:
            if version is None:
                raise _bad_request("POST needs a version: /:key/:version", key=key)
            if self._too_large:
                raise _bad_request("request body too large", status=413, max_body=self.server.max_body)
            commit = self._commit(key, self.parse_version(version), b"".join(self._chunks))
            await self.call(self.server.storage.save, commit)
            await self._await_mirror(commit)
            self.commit_headers(commit.meta)
            self.set_header("Content-Type", "application/json")
            self.finish(_compact(commit_document(commit.meta)))

        await self.run(work)

    def _commit(self, key: str, version: int, body: bytes) -> Commit:
        """The commit a POST asks for, validated as RainerServlet validates it."""
        headers = self.request.headers
        percent = headers.get(HEADER_ENCODING, "").strip().lower() == "percent"

        def header(name: str) -> str | None:
            value = headers.get(name)
            if value is None:
                return None
            try:
                return decode_header(value, percent)
            except UnicodeDecodeError:
                raise _bad_request(f"{name} is not valid percent-encoded UTF-8 ({HEADER_ENCODING}: percent)",
                                   header=name) from None

        named_key, named_version = header("X-Rainer-Key"), header("X-Rainer-Version")
        if named_key is not None and named_key != key:
            raise _bad_request("X-Rainer-Key must match URL key, or be omitted", key=key, header=named_key)
        if named_version is not None and named_version != str(version):
            raise _bad_request("X-Rainer-Version must match URL version, or be omitted", version=version,
                               header=named_version)
        # stored verbatim, as Rainer stores it; only a blank author is refused (nobody to blame)
        author = header("X-Rainer-Author") or ""
        if not author.strip():
            raise _bad_request("X-Rainer-Author is required", key=key, version=version)
        comment = header("X-Rainer-Comment") or ""
        mtime_text = header("X-Rainer-Modified-Time")
        try:
            mtime = parse_mtime(mtime_text) if mtime_text else now()
        except InvalidCommit as invalid:
            raise _bad_request(f"X-Rainer-Modified-Time: {invalid.message} (e.g. 2014-02-11T14:01:28.839-08:00)",
                               header="X-Rainer-Modified-Time", value=mtime_text) from None
        empty_text = header("X-Rainer-Empty")
        empty = parse_flag(empty_text.strip()) if empty_text is not None else False
        if empty is None:
            raise _bad_request("Malformed header: X-Rainer-Empty (yes/no, true/false, 1/0)", value=empty_text)
        if empty:
            if body:
                raise _bad_request("Empty payload required with X-Rainer-Empty", key=key, version=version)
            return Commit.tombstone(key, version, author, comment, mtime)
        serialization = self.server.storage.serialization_for(key)
        return Commit.from_bytes(key, version, body, author, comment, mtime, serialization)

    async def _await_mirror(self, commit: Commit) -> None:
        # Read-your-writes on this server: a GET right after this POST must not get the previous
        # version from the mirror. The keeper already has it; wait (briefly) for its watch.
        mirror = self.server.mirror
        if mirror is None or self.server._publishing is None:
            return
        try:
            await self.call(mirror.wait_for, commit.key, None if commit.empty else commit.version,
                            self.server.mirror_wait, commit.empty)
        except TimeoutError:
            log.debug("mirror did not show %r in time", commit)


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_database_unavailable(exc: BaseException) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))


# -- the server ------------------------------------------------------------------------------------------
class CommitServer(ServerLifecycle):
    """Rainer's HTTP API for ``storage``, served by tornado on its own thread.

    ``start()`` binds (``port=0`` picks a free port) and returns self; ``url`` is the base URL
    (with ``prefix``), ``address`` the ``host:port``; ``stop()``; ``serve_forever()`` blocks until
    ``stop()``; a context manager. ``mirror`` serves cached head reads; ``auth`` (a :class:`WriteAuth`)
    guards POSTs; ``access_log`` logs every request (logger ``tornado.access``; otherwise only 5xx
    answers are); ``max_body`` bounds POST bodies (413 beyond it). ``address`` given to the
    constructor is the host to bind (``host`` afterwards).
    """

    def __init__(self, storage: CommitStorage, port: int = 0, address: str = "127.0.0.1", prefix: str = "",
                 mirror: CommitMirror | None = None, auth: WriteAuth | None = None,
                 max_body: int = DEFAULT_MAX_BODY, workers: int = 8, mirror_wait: float = 2.0,
                 access_log: bool = False) -> None:
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        if any(ch in prefix for ch in "?#%") or " " in prefix:
            raise ConfigurationError("prefix must be a plain URL path like /diary", prefix=prefix)
        super().__init__()
        self.storage = storage
        self.prefix = prefix
        self.mirror = mirror
        self.auth = auth
        self.max_body = max_body
        self.mirror_wait = mirror_wait
        self.access_log = access_log
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="commits-http")
        # Only a storage that publishes to the mirror's keeper makes waiting for the mirror useful.
        self._publishing = storage if mirror is not None and getattr(storage, "keeper", None) is \
            mirror.keeper else None
        # our own limit (max_body) answers 413; tornado's is only a backstop
        self._http = HttpServer(self.application(), address, port, name="commits-http", bind_error=_bind_error,
                                max_body_size=1 << 40, idle_connection_timeout=60)

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        """The port (the real one once started)."""
        return self._http.port

    @property
    def address(self) -> Address:
        """``host:port`` (the real port once started)."""
        return self._http.address

    def __repr__(self) -> str:
        return f"<CommitServer {self.url}>"

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT/PREFIX`` (the real port once started)."""
        return self._http.url + self.prefix

    def application(self) -> tornado.web.Application:
        """The tornado application (routes bound to this server)."""
        p = re.escape(self.prefix)
        args = {"server": self}
        return tornado.web.Application([
            (rf"{p}/?", _ListHandler, args),
            (rf"{p}/([^/]+)/meta", _MetaHandler, args),
            (rf"{p}/([^/]+)/([^/]+)/meta", _MetaHandler, args),
            (rf"{p}/([^/]+)", _CommitHandler, args),
            (rf"{p}/([^/]+)/([^/]+)", _CommitHandler, args),
        ], default_handler_class=_NotFoundHandler, default_handler_args=args, compress_response=False,
            **({} if self.access_log else {"log_function": _log_server_errors_only}))

    # -- lifecycle (start(), stop() and serve_forever() are ServerLifecycle's) --------------------------
    def _start(self) -> None:
        """Serve on a background thread; returns once listening (ServiceBindError when it cannot)."""
        self._http.start()

    def _stop(self) -> None:
        """Stop listening, end the loop and the worker threads."""
        self._http.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _log_server_errors_only(handler: tornado.web.RequestHandler) -> None:
    # A line per request costs as much as serving a cached read; client errors are the
    # clients' business. Server errors are always worth a line.
    if handler.get_status() >= 500:
        request = handler.request
        log.error("%d %s %s %.2fms", handler.get_status(), request.method, request.uri,
                  1000.0 * request.request_time())


class _NotFoundHandler(_Handler):
    def prepare(self) -> None:
        self.send_problem(_HttpProblem(404, _compact({"error": "no such route", "path": self.request.path})))


class ServiceBindError(CommitsError, ServerBindError):
    """The server could not listen on its address (fields: address, port)."""


def _bind_error(message: str, *, host: str, port: int, **_: object) -> ServiceBindError:
    return ServiceBindError(message, address=host, port=port)
