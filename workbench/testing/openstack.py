"""An HTTP stand-in of an OpenStack cloud (Keystone v3, Nova, Cinder, Glance) for tests, on loopback.

OpenStack cannot run on a test machine, so the OpenStack provider is tested against this: a
tornado application speaking the subset of the real APIs the provider uses, with the real
shapes of requests, replies and errors, and servers, volumes and images that move through
their states as they are polled::

    with OpenStackStandIn(password="pw") as cloud:
        cloud.auth_url                      # "http://127.0.0.1:PORT/identity/v3"
        cloud.fail_builds("No valid host was found.", image="broken")
        ...                                 # point the provider at it
        cloud.servers                       # what was booted, by id

What it serves (each path below its service's catalog endpoint; every request but token issue
needs a valid ``X-Auth-Token``, else 401):

* Keystone: ``POST /identity/v3/auth/tokens`` (password method, project scope) answers 201 with
  ``X-Subject-Token`` and a catalog of compute, volumev3/block-storage and image endpoints;
  ``revoke_tokens()`` makes every issued token invalid (a client must authenticate again).
* Nova ``/compute/v2.1``: ``flavors[/detail]``, ``os-keypairs``, ``servers`` (create, get, list,
  delete), ``servers/ID/action`` (``createImage``, ``os-getConsoleOutput``), and
  ``servers/ID/os-volume_attachments``. A new server is ``BUILD``; each GET of it moves its
  progress on by ``100 / build_polls`` until it is ``ACTIVE``, or ``ERROR`` with a ``fault``
  when a rule of :meth:`fail_builds` matches. A deleted server answers ``task_state`` deleting
  for ``delete_polls`` GETs, then 404. The console log carries the server's SSH host key between
  cloud-init's ``BEGIN SSH HOST KEY KEYS`` markers.
* Cinder ``/volume/v3/PROJECT``: ``volumes`` (create, get, delete) going ``creating`` ->
  ``available`` (or ``error`` for sizes above ``max_volume_gb``), ``attaching`` -> ``in-use``
  once attached; ``snapshots`` of volumes, ``creating`` -> ``available``.
* Glance ``/image/v2/images``: the configured images and server snapshots (``queued`` ->
  ``saving`` -> ``active``).

Errors have the real bodies (``{"badRequest": {"code": 400, "message": ...}}``, ``itemNotFound``,
``forbidden`` for quotas, ``conflictingRequest``; Keystone's ``{"error": {...}}``), so the
provider's error translation is exercised for real. ``requests`` records every request
(method, path) for tests that check what the client did.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import tornado.web

from workbench.httpserver import HttpServer

log = logging.getLogger(__name__)

REGION = "RegionOne"
DEFAULT_FLAVORS = (
    {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1},
    {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
    {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40},
)
DEFAULT_IMAGES = ("debian-12", "ubuntu-22.04")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_host_key_line() -> str:
    """A fresh ed25519 public host key as one ``type base64`` line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


# -- state ----------------------------------------------------------------------------------------
@dataclass
class StandInServer:
    """A Nova server of the stand-in."""

    id: str
    name: str
    image_id: str
    flavor_id: str
    key_name: str
    addr: str
    host_key: str
    metadata: dict[str, str]
    networks: Any
    status: str = "BUILD"
    progress: int = 0
    polls: int = 0
    fault: str = ""
    deleting: int | None = None  # GETs left before a deleted server is gone
    created: str = field(default_factory=_now)
    attachments: dict[str, str] = field(default_factory=dict)  # volume id -> device

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id, "name": self.name, "status": self.status, "progress": self.progress,
            "image": {"id": self.image_id}, "flavor": {"id": self.flavor_id}, "key_name": self.key_name,
            "metadata": self.metadata, "created": self.created, "updated": _now(),
            "addresses": ({"private": [{"addr": self.addr, "version": 4, "OS-EXT-IPS:type": "fixed"}]}
                          if self.status != "BUILD" or self.progress >= 50 else {}),
            "accessIPv4": "", "accessIPv6": "",
            "OS-EXT-STS:task_state": "deleting" if self.deleting is not None else
            ("spawning" if self.status == "BUILD" else None),
            "OS-EXT-STS:vm_state": {"BUILD": "building", "ACTIVE": "active", "ERROR": "error"}[self.status],
            "os-extended-volumes:volumes_attached": [{"id": v} for v in self.attachments],
        }
        if self.fault:
            body["fault"] = {"code": 500, "message": self.fault, "created": self.created,
                             "details": "Traceback (most recent call last): ... (stand-in)"}
        return body


@dataclass
class StandInVolume:
    """A Cinder volume of the stand-in."""

    id: str
    name: str
    size: int
    status: str = "creating"
    polls: int = 0
    server_id: str = ""
    device: str = ""
    deleting: int | None = None
    created: str = field(default_factory=_now)

    def as_json(self) -> dict[str, Any]:
        attachments = ([{"server_id": self.server_id, "device": self.device, "attachment_id": self.id,
                         "volume_id": self.id}] if self.server_id and self.status == "in-use" else [])
        return {"id": self.id, "name": self.name, "size": self.size, "status": self.status,
                "attachments": attachments, "created_at": self.created, "bootable": "false",
                "volume_type": "standard", "availability_zone": "nova"}


@dataclass
class StandInImage:
    """A Glance image of the stand-in (a base image or a server snapshot)."""

    id: str
    name: str
    status: str = "active"
    server_id: str = ""
    polls: int = 0
    created: str = field(default_factory=_now)

    def as_json(self) -> dict[str, Any]:
        body = {"id": self.id, "name": self.name, "status": self.status, "created_at": self.created,
                "visibility": "private" if self.server_id else "public", "disk_format": "qcow2",
                "container_format": "bare"}
        if self.server_id:
            body["image_type"] = "snapshot"
            body["instance_uuid"] = self.server_id
        return body


@dataclass
class StandInSnapshot:
    """A Cinder volume snapshot of the stand-in."""

    id: str
    name: str
    volume_id: str
    size: int
    status: str = "creating"
    polls: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "volume_id": self.volume_id, "size": self.size,
                "status": self.status}


@dataclass(frozen=True)
class BuildFault:
    """A rule of :meth:`OpenStackStandIn.fail_builds`: servers matching it end in ERROR with ``message``."""

    message: str
    image: str | None = None
    flavor: str | None = None
    name: str | None = None

    def matches(self, server: StandInServer, image_name: str, flavor_name: str) -> bool:
        return ((self.image is None or self.image in (server.image_id, image_name))
                and (self.flavor is None or self.flavor in (server.flavor_id, flavor_name))
                and (self.name is None or re.fullmatch(self.name, server.name) is not None))


class ApiError(Exception):
    """An error answer of the stand-in, in the body shape of the service that gives it."""

    NOVA_KINDS = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
                  413: "overLimit"}

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self, service: str) -> dict[str, Any]:
        if service == "identity":
            title = {401: "Unauthorized", 400: "Bad Request", 404: "Not Found"}.get(self.status, "Error")
            return {"error": {"code": self.status, "title": title, "message": self.message}}
        return {self.NOVA_KINDS.get(self.status, "computeFault"): {"code": self.status, "message": self.message}}


# -- handlers -------------------------------------------------------------------------------------
class _Handler(tornado.web.RequestHandler):
    """Base of every route: token check, JSON in and out, errors in the service's own shape."""

    service = "compute"

    def initialize(self, cloud: OpenStackStandIn) -> None:
        self.cloud = cloud

    def prepare(self) -> None:
        self.cloud._record(self.request.method or "", self.request.path)
        self.cloud._check_token(self.request.headers.get("X-Auth-Token", ""))

    def body_json(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise ApiError(400, "Malformed request body: not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Malformed request body: a JSON object is required")
        return body

    def reply(self, body: dict[str, Any] | None, status: int = 200) -> None:
        self.set_status(status)
        if body is None:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def _handle_request_exception(self, error: BaseException) -> None:
        if isinstance(error, ApiError):
            if self._finished:
                return
            self.clear()
            if error.status == 401:
                self.set_header("WWW-Authenticate", f'Keystone uri="{self.cloud.auth_url}"')
            self.reply(error.body(self.service), error.status)
            return
        super()._handle_request_exception(error)

    def check_xsrf_cookie(self) -> None:  # an API, not a browser form
        return None


def _member(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid input for field/attribute {name}: a JSON object is required")
    return value


class _Versions(_Handler):
    service = "identity"

    def prepare(self) -> None:  # discovery needs no token
        self.cloud._record(self.request.method or "", self.request.path)

    def get(self) -> None:
        self.reply({"version": {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                                "links": [{"rel": "self", "href": self.cloud.auth_url + "/"}],
                                "media-types": [{"base": "application/json",
                                                 "type": "application/vnd.openstack.identity-v3+json"}]}})


class _Tokens(_Handler):
    service = "identity"

    def prepare(self) -> None:  # issuing a token needs none
        self.cloud._record(self.request.method or "", self.request.path)

    def post(self) -> None:
        token, body = self.cloud._issue_token(self.body_json())
        self.set_header("X-Subject-Token", token)
        self.reply(body, 201)


class _Flavors(_Handler):
    def get(self) -> None:
        self.reply({"flavors": [dict(f, links=[]) for f in self.cloud.flavors]})


class _Flavor(_Handler):
    def get(self, flavor_id: str) -> None:
        self.reply({"flavor": self.cloud._flavor(flavor_id)})


class _Keypairs(_Handler):
    def get(self) -> None:
        with self.cloud.lock:
            pairs = [{"keypair": {"name": n, "public_key": k}} for n, k in self.cloud.keypairs.items()]
        self.reply({"keypairs": pairs})

    def post(self) -> None:
        pair = _member(self.body_json(), "keypair")
        name, public = pair.get("name"), pair.get("public_key")
        if not isinstance(name, str) or not re.fullmatch(r"[\w .@-]{1,255}", name or ""):
            raise ApiError(400, "Keypair data is invalid: bad name")
        if not isinstance(public, str) or not public.startswith(("ssh-", "ecdsa-")):
            raise ApiError(400, "Keypair data is invalid: failed to generate fingerprint")
        with self.cloud.lock:
            if name in self.cloud.keypairs:
                raise ApiError(409, f"Key pair '{name}' already exists.")
            self.cloud.keypairs[name] = public
        self.reply({"keypair": {"name": name, "public_key": public, "user_id": self.cloud.user_id}})


class _Keypair(_Handler):
    def get(self, name: str) -> None:
        with self.cloud.lock:
            public = self.cloud.keypairs.get(name)
        if public is None:
            raise ApiError(404, f"Keypair {name} not found.")
        self.reply({"keypair": {"name": name, "public_key": public}})

    def delete(self, name: str) -> None:
        with self.cloud.lock:
            if self.cloud.keypairs.pop(name, None) is None:
                raise ApiError(404, f"Keypair {name} not found.")
        self.reply(None, 202)


class _Servers(_Handler):
    def get(self) -> None:
        with self.cloud.lock:
            servers = [s.as_json() for s in self.cloud.servers.values()]
        self.reply({"servers": servers})

    def post(self) -> None:
        server = self.cloud._create_server(_member(self.body_json(), "server"))
        self.set_header("Location", f"{self.cloud.compute_url}/servers/{server.id}")
        self.reply({"server": {"id": server.id, "links": [], "adminPass": secrets.token_urlsafe(9),
                               "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]}}, 202)


class _Server(_Handler):
    def get(self, server_id: str) -> None:
        self.reply({"server": self.cloud._poll_server(server_id)})

    def delete(self, server_id: str) -> None:
        self.cloud._delete_server(server_id)
        self.reply(None, 204)


class _ServerAction(_Handler):
    def post(self, server_id: str) -> None:
        body = self.body_json()
        if "createImage" in body:
            image = self.cloud._create_snapshot_image(server_id, _member(body, "createImage"))
            self.set_header("Location", f"{self.cloud.image_url}/v2/images/{image.id}")
            self.reply({"image_id": image.id}, 202)
        elif "os-getConsoleOutput" in body:
            self.reply({"output": self.cloud._console_output(server_id)})
        else:
            raise ApiError(400, f"There is no such action: {', '.join(body) or 'none'}")


class _Attachments(_Handler):
    def get(self, server_id: str) -> None:
        server = self.cloud._server(server_id)
        self.reply({"volumeAttachments": [{"id": v, "volumeId": v, "serverId": server.id, "device": d}
                                          for v, d in server.attachments.items()]})

    def post(self, server_id: str) -> None:
        request = _member(self.body_json(), "volumeAttachment")
        volume_id, device = self.cloud._attach(server_id, request.get("volumeId"), request.get("device"))
        self.reply({"volumeAttachment": {"id": volume_id, "volumeId": volume_id, "serverId": server_id,
                                         "device": device}})


class _Attachment(_Handler):
    def delete(self, server_id: str, volume_id: str) -> None:
        self.cloud._detach(server_id, volume_id)
        self.reply(None, 202)


class _CinderHandler(_Handler):
    """Cinder paths start with the project id, which must be the token's project."""

    service = "volume"

    def prepare(self) -> None:
        super().prepare()
        self.cloud._check_project(self.path_args[0])


class _Volumes(_CinderHandler):
    def get(self, project: str) -> None:
        with self.cloud.lock:
            volumes = [v.as_json() for v in self.cloud.volumes.values()]
        self.reply({"volumes": volumes})

    def post(self, project: str) -> None:
        volume = self.cloud._create_volume(_member(self.body_json(), "volume"))
        self.reply({"volume": volume.as_json()}, 202)


class _Volume(_CinderHandler):
    def get(self, project: str, volume_id: str) -> None:
        self.reply({"volume": self.cloud._poll_volume(volume_id)})

    def delete(self, project: str, volume_id: str) -> None:
        self.cloud._delete_volume(volume_id)
        self.reply(None, 202)


class _Snapshots(_CinderHandler):
    def post(self, project: str) -> None:
        snapshot = self.cloud._create_volume_snapshot(_member(self.body_json(), "snapshot"))
        self.reply({"snapshot": snapshot.as_json()}, 202)


class _Snapshot(_CinderHandler):
    def get(self, project: str, snapshot_id: str) -> None:
        self.reply({"snapshot": self.cloud._poll_volume_snapshot(snapshot_id)})


class _Images(_Handler):
    service = "image"

    def get(self) -> None:
        name = self.get_query_argument("name", None)
        with self.cloud.lock:
            images = [i.as_json() for i in self.cloud.images.values() if name is None or i.name == name]
        self.reply({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"})


class _Image(_Handler):
    service = "image"

    def get(self, image_id: str) -> None:
        self.reply(self.cloud._poll_image(image_id))


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Error answers are what tests provoke on purpose: keep them out of the warning log.
    log.debug("%d %s %.1fms", handler.get_status(), handler._request_summary(),
              1000.0 * handler.request.request_time())


# -- the stand-in ---------------------------------------------------------------------------------
class OpenStackStandIn:
    """Keystone v3, Nova, Cinder and Glance stand-ins on one loopback HTTP port (see the module docstring).

    Options: ``build_polls`` GETs of a new server until it is ACTIVE (``None``: it stays in BUILD
    forever, for timeout tests), ``delete_polls`` GETs until a deleted server is gone,
    ``volume_polls`` GETs until a volume or snapshot is ready, ``max_servers`` the instances
    quota, ``max_volume_gb`` the largest volume that builds (bigger ones go to ``error``),
    ``addresses`` a callable ``index -> address`` for new servers (default: 127.0.1.x, loopback
    addresses where nothing listens, so a client that tries to log in is refused at once and
    nothing ever leaves the machine), and ``host_keys`` a callable ``index -> "type base64"`` for
    the host key its console shows (default: a new ed25519 key per server). Pointing both at a
    real sshd on loopback makes the servers reachable.
    """

    def __init__(self, *, username: str = "workbench", password: str | None = None,
                 project_id: str | None = None, project_name: str = "workbench",
                 user_domain: str = "Default", build_polls: int | None = 3, delete_polls: int = 1,
                 volume_polls: int = 1, max_servers: int = 10, max_volume_gb: int = 100,
                 flavors: tuple[dict[str, Any], ...] = DEFAULT_FLAVORS, images: tuple[str, ...] = DEFAULT_IMAGES,
                 addresses: Callable[[int], str] | None = None,
                 host_keys: Callable[[int], str] | None = None) -> None:
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.project_id = project_id or uuid.uuid4().hex
        self.project_name = project_name
        self.user_domain = user_domain
        self.user_id = uuid.uuid4().hex
        self.build_polls = build_polls
        self.delete_polls = delete_polls
        self.volume_polls = volume_polls
        self.max_servers = max_servers
        self.max_volume_gb = max_volume_gb
        self.flavors = [dict(f) for f in flavors]
        self.addresses = addresses or (lambda index: f"127.0.1.{10 + index % 240}")
        self.host_keys = host_keys or (lambda index: new_host_key_line())
        self.lock = threading.RLock()
        self.tokens: dict[str, str] = {}  # token -> project id
        self.keypairs: dict[str, str] = {}
        self.servers: dict[str, StandInServer] = {}
        self.volumes: dict[str, StandInVolume] = {}
        self.volume_snapshots: dict[str, StandInSnapshot] = {}
        self.images: dict[str, StandInImage] = {}
        for name in images:
            image = StandInImage(uuid.uuid4().hex, name)
            self.images[image.id] = image
        self.faults: list[BuildFault] = []
        self.requests: list[tuple[str, str]] = []
        self.token_requests = 0
        self._server_count = 0
        self._http = HttpServer(self._application(), name="openstack-stand-in")

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> OpenStackStandIn:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> OpenStackStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (after start)."""
        return self._http.url

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity/v3"

    @property
    def compute_url(self) -> str:
        return f"{self.url}/compute/v2.1"

    @property
    def volume_url(self) -> str:
        return f"{self.url}/volume/v3/{self.project_id}"

    @property
    def image_url(self) -> str:
        return f"{self.url}/image"

    # -- controls for tests -----------------------------------------------------------------------
    def fail_builds(self, message: str, *, image: str | None = None, flavor: str | None = None,
                    name: str | None = None) -> BuildFault:
        """Servers booted from ``image`` / with ``flavor`` / named like the regex ``name`` end in ERROR."""
        rule = BuildFault(message, image, flavor, name)
        with self.lock:
            self.faults.append(rule)
        return rule

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far (as a password change or token flush would)."""
        with self.lock:
            self.tokens.clear()

    def image_id(self, name: str) -> str:
        with self.lock:
            for image in self.images.values():
                if image.name == name:
                    return image.id
        raise KeyError(name)

    def live_servers(self) -> list[StandInServer]:
        """Servers not deleted (deleting ones excluded)."""
        with self.lock:
            return [s for s in self.servers.values() if s.deleting is None]

    # -- routes ---------------------------------------------------------------------------------
    def _application(self) -> tornado.web.Application:
        uuid_part = r"([0-9a-f-]+)"
        routes: list[tuple[str, type, dict[str, Any]]] = [
            (r"/identity/v3/?", _Versions, {}),
            (r"/identity/v3/auth/tokens", _Tokens, {}),
            (r"/compute/v2\.1/flavors(?:/detail)?", _Flavors, {}),
            (r"/compute/v2\.1/flavors/([^/]+)", _Flavor, {}),
            (r"/compute/v2\.1/os-keypairs", _Keypairs, {}),
            (r"/compute/v2\.1/os-keypairs/([^/]+)", _Keypair, {}),
            (r"/compute/v2\.1/servers(?:/detail)?", _Servers, {}),
            (rf"/compute/v2\.1/servers/{uuid_part}", _Server, {}),
            (rf"/compute/v2\.1/servers/{uuid_part}/action", _ServerAction, {}),
            (rf"/compute/v2\.1/servers/{uuid_part}/os-volume_attachments", _Attachments, {}),
            (rf"/compute/v2\.1/servers/{uuid_part}/os-volume_attachments/{uuid_part}", _Attachment, {}),
            (r"/volume/v3/([^/]+)/volumes(?:/detail)?", _Volumes, {}),
            (rf"/volume/v3/([^/]+)/volumes/{uuid_part}", _Volume, {}),
            (r"/volume/v3/([^/]+)/snapshots", _Snapshots, {}),
            (rf"/volume/v3/([^/]+)/snapshots/{uuid_part}", _Snapshot, {}),
            (r"/image/v2/images", _Images, {}),
            (rf"/image/v2/images/{uuid_part}", _Image, {}),
        ]
        return tornado.web.Application([(path, handler, {"cloud": self, **extra})
                                        for path, handler, extra in routes],
                                       log_function=_log_request)

    def _record(self, method: str, path: str) -> None:
        with self.lock:
            self.requests.append((method, path))

    # -- keystone -------------------------------------------------------------------------------
    def _check_token(self, token: str) -> None:
        with self.lock:
            if not token or token not in self.tokens:
                raise ApiError(401, "The request you have made requires authentication.")

    def _check_project(self, project: str) -> None:
        if project != self.project_id:
            raise ApiError(404, f"Project {project} could not be found.")

    def _issue_token(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        with self.lock:
            self.token_requests += 1
        try:
            identity = body["auth"]["identity"]
            user = identity["password"]["user"]
            methods = identity["methods"]
        except (KeyError, TypeError):
            raise ApiError(400, "Expecting to find auth.identity.password.user in the request body") from None
        if methods != ["password"]:
            raise ApiError(401, "Unsupported authentication method.")
        domain = user.get("domain") or {}
        domain_ok = domain.get("name") == self.user_domain or domain.get("id") in (self.user_domain.lower(),
                                                                                   self.user_domain)
        name_ok = user.get("name") == self.username or user.get("id") == self.user_id
        if not (name_ok and domain_ok and secrets.compare_digest(str(user.get("password", "")), self.password)):
            raise ApiError(401, "The request you have made requires authentication.")
        project = ((body["auth"].get("scope") or {}).get("project")) or {}
        if project.get("id", self.project_id) != self.project_id or \
                project.get("name", self.project_name) != self.project_name:
            raise ApiError(401, "User has no access to project")
        token = secrets.token_hex(16)
        with self.lock:
            self.tokens[token] = self.project_id
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)

        def endpoints(url: str) -> list[dict[str, str]]:
            return [{"id": uuid.uuid4().hex, "interface": interface, "region": REGION, "region_id": REGION,
                     "url": url} for interface in ("public", "internal", "admin")]

        catalog = [
            {"type": "identity", "name": "keystone", "id": uuid.uuid4().hex, "endpoints": endpoints(self.auth_url)},
            {"type": "compute", "name": "nova", "id": uuid.uuid4().hex, "endpoints": endpoints(self.compute_url)},
            {"type": "volumev3", "name": "cinderv3", "id": uuid.uuid4().hex,
             "endpoints": endpoints(self.volume_url)},
            {"type": "block-storage", "name": "cinder", "id": uuid.uuid4().hex,
             "endpoints": endpoints(self.volume_url)},
            {"type": "image", "name": "glance", "id": uuid.uuid4().hex, "endpoints": endpoints(self.image_url)},
        ]
        return token, {"token": {
            "methods": ["password"], "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "issued_at": _now(), "audit_ids": [secrets.token_urlsafe(16)],
            "user": {"id": self.user_id, "name": self.username,
                     "domain": {"id": self.user_domain.lower(), "name": self.user_domain}},
            "project": {"id": self.project_id, "name": self.project_name,
                        "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": uuid.uuid4().hex, "name": "member"}],
            "catalog": catalog,
        }}

    # -- nova -----------------------------------------------------------------------------------
    def _flavor(self, ref: str) -> dict[str, Any]:
        for flavor in self.flavors:
            if ref in (flavor["id"], flavor["name"]):
                return dict(flavor)
        raise ApiError(404, f"Flavor {ref} could not be found.")

    def _server(self, server_id: str) -> StandInServer:
        with self.lock:
            server = self.servers.get(server_id)
        if server is None:
            raise ApiError(404, f"Instance {server_id} could not be found.")
        return server

    def _create_server(self, request: dict[str, Any]) -> StandInServer:
        name = request.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise ApiError(400, "Invalid input for field/attribute name.")
        image_ref, flavor_ref = request.get("imageRef"), request.get("flavorRef")
        if not image_ref:
            raise ApiError(400, "Invalid input for field/attribute imageRef.")
        with self.lock:
            image = self.images.get(str(image_ref))
        if image is None or image.status != "active":
            raise ApiError(400, f"Image {image_ref} could not be found.")
        flavor = self._flavor(str(flavor_ref or ""))
        key_name = request.get("key_name") or ""
        metadata = request.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ApiError(400, "Invalid input for field/attribute metadata.")
        with self.lock:
            if key_name and key_name not in self.keypairs:
                raise ApiError(400, "Invalid key_name provided.")
            if len(self.live_servers()) >= self.max_servers:
                raise ApiError(403, f"Quota exceeded for instances: Requested 1, but already used "
                                    f"{len(self.live_servers())} of {self.max_servers} instances")
            server = StandInServer(uuid.uuid4().hex, name, image.id, flavor["id"], key_name,
                                   self.addresses(self._server_count), self.host_keys(self._server_count),
                                   dict(metadata),
                                   request.get("networks"))
            self._server_count += 1
            for rule in self.faults:
                if rule.matches(server, image.name, flavor["name"]):
                    server.fault = rule.message
                    break
            self.servers[server.id] = server
        return server

    def _poll_server(self, server_id: str) -> dict[str, Any]:
        with self.lock:
            server = self._server(server_id)
            if server.deleting is not None:
                if server.deleting <= 0:
                    del self.servers[server_id]
                    raise ApiError(404, f"Instance {server_id} could not be found.")
                server.deleting -= 1
            elif server.status == "BUILD" and self.build_polls is not None:
                server.polls += 1
                server.progress = min(100, server.polls * 100 // max(1, self.build_polls))
                if server.fault and server.progress >= 50:
                    server.status, server.progress = "ERROR", 0
                elif server.progress >= 100:
                    server.status = "ACTIVE"
            return server.as_json()

    def _delete_server(self, server_id: str) -> None:
        with self.lock:
            server = self._server(server_id)
            if server.deleting is None:
                server.deleting = self.delete_polls
                for volume_id in list(server.attachments):
                    self._detach(server_id, volume_id)

    def _console_output(self, server_id: str) -> str:
        server = self._server(server_id)
        if server.status != "ACTIVE":
            raise ApiError(409, f"Cannot 'os-getConsoleOutput' instance {server_id} while it is in "
                                f"vm_state {server.status.lower()}")
        return "\n".join([
            f"[    0.000000] Linux version 6.1.0 (stand-in) booting {server.name}",
            "ci-info: no authorized SSH keys fingerprints found for user debian.",
            "-----BEGIN SSH HOST KEY KEYS-----",
            f"{server.host_key} root@{server.name}",
            "-----END SSH HOST KEY KEYS-----",
            "Cloud-init v. 22.4.2 finished. Datasource DataSourceOpenStack.  Up 7.21 seconds",
            "",
        ])

    def _create_snapshot_image(self, server_id: str, request: dict[str, Any]) -> StandInImage:
        server = self._server(server_id)
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "Invalid input for field/attribute name.")
        if server.status != "ACTIVE":
            raise ApiError(409, f"Cannot 'createImage' instance {server_id} while it is in vm_state "
                                f"{server.status.lower()}")
        image = StandInImage(uuid.uuid4().hex, name, status="queued", server_id=server_id)
        with self.lock:
            self.images[image.id] = image
        return image

    def _poll_image(self, image_id: str) -> dict[str, Any]:
        with self.lock:
            image = self.images.get(image_id)
            if image is None:
                raise ApiError(404, f"No image found with ID {image_id}")
            if image.status in ("queued", "saving"):
                image.polls += 1
                image.status = "active" if image.polls > self.volume_polls else "saving"
            return image.as_json()

    def _attach(self, server_id: str, volume_id: Any, device: Any) -> tuple[str, str]:
        with self.lock:
            server = self._server(server_id)
            volume = self.volumes.get(str(volume_id))
            if volume is None:
                raise ApiError(404, f"Volume {volume_id} could not be found.")
            if volume.status != "available":
                raise ApiError(400, f"Invalid volume: volume {volume_id} status must be 'available', "
                                    f"not '{volume.status}'")
            if server.status != "ACTIVE":
                raise ApiError(409, f"Cannot 'attach_volume' instance {server_id} while it is in vm_state "
                                    f"{server.status.lower()}")
            used = set(server.attachments.values())
            device = device or next(f"/dev/vd{c}" for c in "bcdefghijklmnop" if f"/dev/vd{c}" not in used)
            server.attachments[volume.id] = device
            volume.status, volume.server_id, volume.device, volume.polls = "attaching", server.id, device, 0
            return volume.id, device

    def _detach(self, server_id: str, volume_id: str) -> None:
        with self.lock:
            server = self._server(server_id)
            if volume_id not in server.attachments:
                raise ApiError(404, f"Volume {volume_id} is not attached to {server_id}")
            del server.attachments[volume_id]
            volume = self.volumes.get(volume_id)
            if volume is not None:
                volume.status, volume.server_id, volume.device = "available", "", ""

    # -- cinder ---------------------------------------------------------------------------------
    def _create_volume(self, request: dict[str, Any]) -> StandInVolume:
        size = request.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ApiError(400, "Invalid input received: size must be an integer greater than 0")
        volume = StandInVolume(uuid.uuid4().hex, str(request.get("name") or ""), size)
        with self.lock:
            self.volumes[volume.id] = volume
        return volume

    def _volume(self, volume_id: str) -> StandInVolume:
        with self.lock:
            volume = self.volumes.get(volume_id)
        if volume is None:
            raise ApiError(404, f"Volume {volume_id} could not be found.")
        return volume

    def _poll_volume(self, volume_id: str) -> dict[str, Any]:
        with self.lock:
            volume = self._volume(volume_id)
            if volume.deleting is not None:
                if volume.deleting <= 0:
                    del self.volumes[volume_id]
                    raise ApiError(404, f"Volume {volume_id} could not be found.")
                volume.deleting -= 1
            elif volume.status in ("creating", "attaching"):
                volume.polls += 1
                if volume.polls >= self.volume_polls:
                    if volume.status == "attaching":
                        volume.status = "in-use"
                    else:
                        volume.status = "error" if volume.size > self.max_volume_gb else "available"
            return volume.as_json()

    def _delete_volume(self, volume_id: str) -> None:
        with self.lock:
            volume = self._volume(volume_id)
            if volume.status in ("in-use", "attaching"):
                raise ApiError(400, f"Invalid volume: Volume status must be available or error, but "
                                    f"current status is: {volume.status}")
            if volume.deleting is None:
                volume.deleting = self.delete_polls
                volume.status = "deleting"

    def _create_volume_snapshot(self, request: dict[str, Any]) -> StandInSnapshot:
        volume = self._volume(str(request.get("volume_id")))
        if volume.status == "in-use" and not request.get("force"):
            raise ApiError(400, "Invalid volume: Volume status must be available, or in-use with force")
        snapshot = StandInSnapshot(uuid.uuid4().hex, str(request.get("name") or ""), volume.id, volume.size)
        with self.lock:
            self.volume_snapshots[snapshot.id] = snapshot
        return snapshot

    def _poll_volume_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        with self.lock:
            snapshot = self.volume_snapshots.get(snapshot_id)
            if snapshot is None:
                raise ApiError(404, f"Snapshot {snapshot_id} could not be found.")
            if snapshot.status == "creating":
                snapshot.polls += 1
                if snapshot.polls >= self.volume_polls:
                    snapshot.status = "available"
            return snapshot.as_json()


__all__ = ["OpenStackStandIn", "BuildFault", "new_host_key_line", "StandInServer", "StandInVolume", "StandInImage",
           "StandInSnapshot"]
