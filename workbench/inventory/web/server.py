"""The inventory web server on tornado: ``/web/<module>/<name>`` pages and ``/data/<module>/<name>`` JSON.

::

    server = WebServer(inventory, port=0, module_dirs=["/etc/inventory/web"]).start()
    print(server.url)            # http://127.0.0.1:PORT
    ...
    server.stop()

Every request is answered by the ``WebModule`` instance exported under that name (see
``discovery``), run on a worker thread so a slow page never stalls the others. ``/data`` answers
Dynamo's envelope: ``{"result": "OK", "message": "", "data": ...}``, and on an error
``{"result": <the status's reason phrase, "Bad Request">, "message": ...}``; with ``callback=NAME``
a success is JSONP, ``NAME({...})``. ``format=workbench`` keeps this project's error envelope
``{"result": "Failed", "message": ..., "data": null}``. ``/web`` answers an HTML page in
the shared layout; ``/events`` streams the image's change events (server-sent events). Errors
keep their status: 400 bad parameters, 401/403 writes without the right certificate, 404 unknown
pages, 405 a write with GET, 409 a busy writer, 503 while the inventory is not loaded.

With ``tls`` the server speaks HTTPS and maps client certificates to users (``auth``); without,
it speaks HTTP and every caller is anonymous, which makes it read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.iostream
import tornado.web

from workbench.errors import InventoryError
from workbench.httpserver import HttpServer
from workbench.events import CLOSED, Event
from workbench.inventory.web.auth import ANONYMOUS, TLSConfig, User, UserMap
from workbench.inventory.web.discovery import ModuleRegistry, discover
from workbench.inventory.web.errors import (AuthenticationRequired, BadRequest, Forbidden, InventoryUnavailable,
                                            MethodNotAllowed, NotFound, WebError, WriteConflict)
from workbench.inventory.web.modules._base import HTMLMixin, WebModule
from workbench.inventory.web.page import PageLayout
from workbench.inventory.web.writing import ApplyChanges, ChangeRecorder, apply_directly
from workbench.servers import Address, ServerLifecycle

log = logging.getLogger(__name__)

DEFAULT_WEB_PORT = 8081
#: bodies larger than this are refused before they are read
MAX_BODY_BYTES = 64 * 1024 * 1024
#: how long a write request waits for the previous writer before 409
WRITE_WAIT_SECONDS = 30.0
#: a comment line on an idle event stream, so proxies and clients see the connection is alive
KEEPALIVE_SECONDS = 15.0
#: errors of the apply path that mean "not now, or not here" rather than "bad request"
_CONFLICTS = frozenset({"WriterBusyError", "NotPrimaryError"})
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Pages carry no scripts of their own; a name that slipped through escaping still cannot run.
_HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'"


#: a JSONP callback: a dotted JavaScript name, nothing a page could run beyond the call
_CALLBACK = re.compile(r"[A-Za-z_$][\w$]{0,99}(?:\.[A-Za-z_$][\w$]{0,99}){0,9}", re.ASCII)


def _decode(values: list[bytes], name: str) -> str | list[str]:
    try:
        decoded = [value.decode("utf-8") for value in values]
    except UnicodeDecodeError:
        raise BadRequest(f"parameter {name!r} is not UTF-8", parameter=name) from None
    return decoded[0] if len(decoded) == 1 else decoded


class _ModuleHandler(tornado.web.RequestHandler):
    """Runs the module exported as ``(module, name)`` under this handler's ``kind`` (web or data)."""

    kind = "data"

    def initialize(self, web_server: "WebServer") -> None:
        self.web_server = web_server

    def set_default_headers(self) -> None:
        for header, value in _SECURITY_HEADERS.items():
            self.set_header(header, value)

    async def get(self, module: str, name: str | None) -> None:
        await self._answer(module, name or "")

    async def post(self, module: str, name: str | None) -> None:
        await self._answer(module, name or "")

    # -- the request ------------------------------------------------------------------------------
    def caller(self) -> User:
        tls = self.web_server.tls
        if tls is None:
            return ANONYMOUS
        der = self.request.get_ssl_certificate(binary_form=True)
        return tls.users.for_certificate(der if isinstance(der, bytes) else None)

    def parameters(self) -> dict[str, Any]:
        """GET and POST parameters: a string each, a list when repeated; a JSON object body merged in.

        As Dynamo's server, ``name[]`` is ``name`` and always a list.
        """
        parameters: dict[str, Any] = {}
        for source in (self.request.query_arguments, self.request.body_arguments):
            for raw_key, values in source.items():
                key = raw_key[:-2] if raw_key.endswith("[]") and len(raw_key) > 2 else raw_key
                value = _decode(values, raw_key)
                if key != raw_key and not isinstance(value, list):
                    value = [value]
                if key in parameters:
                    previous = parameters[key]
                    parameters[key] = (previous if isinstance(previous, list) else [previous]) + \
                        (value if isinstance(value, list) else [value])
                else:
                    parameters[key] = value
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "application/json" and self.request.body:
            try:
                body = json.loads(self.request.body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest(f"the body is not valid JSON: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("a JSON body must be an object of parameters")
            parameters.update(body)
        return parameters

    async def _answer(self, module: str, name: str) -> None:
        started = time.perf_counter()
        caller = ANONYMOUS
        try:
            instance = self.web_server.modules.exports(self.kind).get((module, name))
            if instance is None:
                raise NotFound(f"no page /{self.kind}/{module}/{name}".rstrip("/"), module=module, name=name)
            caller = self.caller()
            if instance.write_enabled:
                self._check_writer(instance, caller)
            request = self.parameters()
            result = await asyncio.get_running_loop().run_in_executor(
                self.web_server.executor, self.web_server.run_module, instance, caller, request,
                f"/{self.kind}/{module}/{name}")
        except WebError as exc:
            self._fail(exc.status, exc.message, caller)
        except InventoryError as exc:  # the inventory refused the change or the lookup: the caller's fault
            self._fail(400, str(exc), caller)
        except Exception:
            log.exception("%s /%s/%s/%s failed", self.request.method, self.kind, module, name)
            self._fail(500, "internal error (see the server log)", caller)
        else:
            self._succeed(result)
        finally:
            self.web_server.count_request(time.perf_counter() - started)

    def _check_writer(self, instance: WebModule, caller: User) -> None:
        if self.request.method != "POST":
            self.set_header("Allow", "POST")
            raise MethodNotAllowed("this page changes the inventory: use POST")
        if not caller.authenticated:
            raise AuthenticationRequired("changing the inventory needs a client certificate (HTTPS)")
        if not caller.has_role(instance.required_role):
            raise Forbidden(f"user {caller.name!r} lacks the role {instance.required_role!r}",
                            user=caller.name, required=instance.required_role)

    # -- the answer -------------------------------------------------------------------------------
    def _raw_values(self, name: str) -> list[bytes]:
        # the raw bytes: an answer about a malformed request must not fail on decoding it again
        return self.request.query_arguments.get(name, []) + self.request.body_arguments.get(name, [])

    def _workbench_format(self) -> bool:
        """Whether ``format=workbench`` asked for this project's envelope (else Dynamo's)."""
        return self._raw_values("format")[-1:] == [b"workbench"]

    def _callback(self) -> str | None:
        """The JSONP function of ``callback=`` (400 unless a dotted JavaScript name)."""
        values = self._raw_values("callback")
        if not values:
            return None
        name = values[-1].decode("ascii", errors="replace")
        if not _CALLBACK.fullmatch(name):
            raise BadRequest("parameter 'callback' must be a JavaScript function name", parameter="callback",
                             value=name[:100])
        return name

    def _succeed(self, result: Any) -> None:
        try:
            callback = self._callback()
        except BadRequest as exc:
            self._fail(exc.status, exc.message, ANONYMOUS)
            return
        self.write_envelope("OK", "", result, callback)

    def _fail(self, status: int, message: str, caller: User) -> None:
        self.set_status(status)
        if self._workbench_format():
            self.write_envelope("Failed", message, None)
        else:  # Dynamo's: the reason phrase as the result, no data
            self.write_envelope(self._reason, message)

    _NO_DATA: Any = object()

    def write_envelope(self, result: str, message: str, data: Any = _NO_DATA, callback: str | None = None) -> None:
        envelope = {"result": result, "message": message}
        if data is not self._NO_DATA:
            envelope["data"] = data
        try:
            body = json.dumps(envelope, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            log.error("/data answer is not JSON-able: %s", exc)
            self.set_status(500)
            body = json.dumps({"result": "Failed", "message": "the module answered something that is not JSON",
                               "data": None} if self._workbench_format() else
                              {"result": self._reason, "message": "the module answered something that is not JSON"})
            callback = None
        # "</" inside a string would end a <script> a page might embed this in.
        body = body.replace("</", "<\\/")
        if callback is None:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(body)
        else:
            # Dynamo labels JSONP application/json; browsers run a script only with a script type
            # (nosniff is set), so the call goes out as JavaScript.
            self.set_header("Content-Type", "text/javascript; charset=UTF-8")
            self.finish(f"{callback}({body})")


class _DataHandler(_ModuleHandler):
    kind = "data"


class _WebHandler(_ModuleHandler):
    kind = "web"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", _HTML_POLICY)

    def _succeed(self, result: Any) -> None:
        if not isinstance(result, str):
            log.error("/web module answered %s, not an HTML string", type(result).__name__)
            self._fail(500, "the module answered something that is not a page", ANONYMOUS)
            return
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(result)

    def _fail(self, status: int, message: str, caller: User) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        title = f"{status} {self._reason}"
        self.finish(self.web_server.layout.page(title, "<p class=\"error\">{{ message }}</p>",
                                                user=caller.name, message=message))


class _IndexHandler(_WebHandler):
    """``/``: every page and data URL the server has, linked."""

    SUPPORTED_METHODS = ("GET",)

    async def get(self) -> None:  # type: ignore[override]
        server = self.web_server
        pages = [(kind, module, name) for kind in ("web", "data")
                 for module, name in sorted(server.modules.exports(kind))]
        rows = [(server.layout.link(f"/{kind}/{module}/{name}", f"/{kind}/{module}/{name}"), module)
                for kind, module, name in pages]
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(server.layout.page("Pages", server.layout.table(["page", "module"], rows),
                                       user=self.caller().name))


class _EventsHandler(tornado.web.RequestHandler):
    """``/events``: the image's change events as a server-sent event stream (``text/event-stream``).

    Each event is ``event: <kind>`` and ``data: <JSON list of its arguments>``, e.g.
    ``object_updated`` with the object's dict. A comment line opens the stream once the
    subscription is live, and another keeps it alive every ``KEEPALIVE_SECONDS``.
    """

    def initialize(self, web_server: "WebServer") -> None:
        self.web_server = web_server
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def get(self) -> None:
        try:
            inventory = self.web_server.current_inventory()
        except InventoryUnavailable as exc:
            self.set_status(503)
            self.finish(exc.message)
            return
        if not hasattr(inventory, "add_listener"):
            self.set_status(404)
            self.finish("this inventory sends no events")
            return
        loop = asyncio.get_running_loop()
        queue = self.queue

        def listener(event: Event) -> None:  # on the image's dispatcher thread
            loop.call_soon_threadsafe(queue.put_nowait, event)

        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        inventory.add_listener(listener)
        self.web_server.event_streams.add(queue)
        try:
            self.write(": subscribed\n\n")
            await self.flush()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    self.write(": keepalive\n\n")
                    await self.flush()
                    continue
                # Whatever else is queued goes out in the same flush: a burst is one write.
                batch = [event]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                ended = any(item is None or item.kind == CLOSED for item in batch)
                for item in batch:
                    if item is not None and item.kind != CLOSED:
                        payload = json.dumps(list(item.args), default=str, ensure_ascii=False)
                        self.write(f"id: {item.seq}\nevent: {item.kind}\ndata: {payload}\n\n")
                await self.flush()
                if ended:
                    break
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            inventory.remove_listener(listener)
            self.web_server.event_streams.discard(queue)
        if not self._finished:
            self.finish()

    def on_connection_close(self) -> None:
        self.queue.put_nowait(None)


class _NotFoundHandler(_WebHandler):
    async def get(self, *args: Any) -> None:  # type: ignore[override]
        self._fail(404, f"no page {self.request.path}", ANONYMOUS)

    post = get


class WebServer(ServerLifecycle):
    """The inventory's web server: modules from the package and ``module_dirs``, HTTP or HTTPS.

    ``inventory`` is the RAM image, or a callable returning the current one (None while there is
    none: a server reloading after it went out of sync). An image whose ``loaded`` attribute is
    false is answered with 503. ``apply(changes, title=..., user=...)`` applies what a write
    module recorded (default: straight into the image); ``modules_config`` maps module names to
    the ``Configuration`` their classes get.
    """

    #: the class of ``run``'s ``caller`` (where the seed's modules look for it)
    User = User

    def __init__(self, inventory: Any, port: int = 0, address: str = "127.0.0.1",
                 module_dirs: Iterable[str] = (), tls: TLSConfig | None = None, *,
                 modules_config: Mapping[str, Mapping[str, Any]] | None = None,
                 apply: ApplyChanges | None = None, builtin_modules: bool = True,
                 site_title: str = "workbench inventory", workers: int = 4,
                 write_wait: float = WRITE_WAIT_SECONDS) -> None:
        super().__init__()
        self._inventory = inventory
        self.requested_port = port
        self.host = address
        self.tls = tls
        self.apply = apply
        self.write_wait = write_wait
        self.modules: ModuleRegistry = discover(module_dirs, modules_config, builtin=builtin_modules)
        nav = [(instance.nav_label, f"/web/{module}/{name}")
               for (module, name), instance in sorted(self.modules.web.items()) if instance.nav_label]
        self.layout = PageLayout(site_title, nav=nav)
        for instance in self.modules.web.values():
            if isinstance(instance, HTMLMixin):
                instance.layout = self.layout
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inventory-web")
        self._write_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.event_streams: set[asyncio.Queue[Any]] = set()
        self.requests = 0
        self.request_seconds = 0.0
        self._http: HttpServer | None = None

    # -- the inventory ----------------------------------------------------------------------------
    def current_inventory(self) -> Any:
        """The image to answer from; raises ``InventoryUnavailable`` while there is none loaded."""
        inventory = self._inventory
        if callable(inventory) and not hasattr(inventory, "update"):
            inventory = inventory()
        if inventory is None or not getattr(inventory, "loaded", True):
            raise InventoryUnavailable("the inventory is not loaded yet; try again shortly")
        return inventory

    def run_module(self, instance: WebModule, caller: User, request: dict[str, Any], title: str) -> Any:
        """Run one request (worker thread). Write modules record, then apply under the write lock."""
        inventory = self.current_inventory()
        if not instance.write_enabled:
            # The image's lock gives a page one consistent view (changes wait for it, briefly).
            with getattr(inventory, "lock", contextlib.nullcontext()):
                return instance.run(caller, request, inventory)
        if not self._write_lock.acquire(timeout=self.write_wait):
            raise WriteConflict("another web request is changing the inventory", waited=self.write_wait)
        try:
            recorder = ChangeRecorder(inventory)
            result = instance.run(caller, request, recorder)
            if recorder.changes:
                apply = self.apply or apply_directly(inventory)
                try:
                    applied = apply(recorder.changes, title=title, user=caller.name)
                except InventoryError as exc:
                    # Another writer, or this server is a secondary: the request may succeed later or
                    # elsewhere, which is what 409 says (the message names the primary).
                    if type(exc).__name__ in _CONFLICTS:
                        raise WriteConflict(exc.message, **exc.fields) from None
                    raise
                if isinstance(result, dict) and "applied" not in result and isinstance(applied, dict):
                    result = {**result, "applied": applied}
            return result
        finally:
            self._write_lock.release()

    def count_request(self, seconds: float) -> None:
        with self._stats_lock:
            self.requests += 1
            self.request_seconds += seconds

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def port(self) -> int:
        """The bound port once started (0 before)."""
        return self._http.port if self._http is not None else 0

    @property
    def address(self) -> Address:
        """``host:port`` (the real port once started)."""
        return Address.tcp(self.host, self.port)

    @property
    def url(self) -> str:
        """``http(s)://ADDRESS:PORT`` once started (the real port when bound to 0)."""
        return f"{self.scheme}://{self.address}"

    def application(self) -> tornado.web.Application:
        arguments = {"web_server": self}
        return tornado.web.Application([
            (r"/", _IndexHandler, arguments),
            (r"/web/([^/]+)(?:/([^/]*))?/?", _WebHandler, arguments),
            (r"/data/([^/]+)(?:/([^/]*))?/?", _DataHandler, arguments),
            (r"/events", _EventsHandler, arguments),
            (r"/(.*)", _NotFoundHandler, arguments),
        ], compress_response=True)

    def _start(self) -> None:
        """Bind and serve on a background thread; returns once the port is bound (``url`` is valid)."""
        if self._http is not None:
            raise InventoryError("web server already started", url=self.url)
        ssl_context = self.tls.server_context() if self.tls is not None else None
        http = HttpServer(self.application(), self.host, self.requested_port, name="inventory-web",
                          ssl_context=ssl_context, bind_error=InventoryError, before_close=self._end_event_streams,
                          max_body_size=MAX_BODY_BYTES, xheaders=False)
        self._http = http.start()
        log.info("inventory web server on %s", self.url)

    async def _end_event_streams(self) -> None:
        for queue in list(self.event_streams):  # each open /events response ends at its None
            queue.put_nowait(None)

    def _stop(self) -> None:
        """Stop listening, finish, and release the port."""
        if self._http is not None:
            self._http.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "WebServer":
        return self.start() if self._http is None else self


__all__ = ["DEFAULT_WEB_PORT", "TLSConfig", "UserMap", "WebServer"]
