"""The OpenStack provider: instances are Nova servers, volumes are Cinder volumes (the seed's default provider).

Authentication is Keystone v3 through keystoneauth1 (a token is fetched, cached and fetched
again when it expires or is refused); Nova, Cinder and Glance are called over REST through
keystoneauth adapters, their endpoints taken from the token's catalog (or the ``os_*_bypass_url``
settings)::

    settings = Settings.load(provider="openstack", os_auth_url="https://cloud.example:5000/v3",
                             os_username="dtrove", os_password="...", os_project_id="8d0...",
                             os_flavor="m1.small")
    provider = OpenStackProvider(settings, store)
    provider.create(instance)           # boots, polls to ACTIVE, records server, addr, host key
    provider.attach_volume(instance)    # a new Cinder volume, attached and in-use
    provider.destroy(instance)          # deletes the server (and its volume), polls until gone

A server that ends in ERROR raises ``ProviderError`` carrying Nova's fault message; every HTTP
failure becomes a ``ProviderError`` with the service, method, URL, HTTP status and the cloud's own
message; waits are bounded by ``build_timeout`` / ``delete_timeout`` / ``volume_timeout``.

The host key of a new server is read from its console log (cloud-init prints it between
``-----BEGIN SSH HOST KEY KEYS-----`` markers), so the provider vouches for exactly the key the
server generated and SSH refuses any other.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from workbench.clusters.errors import ProviderError
from workbench.clusters.providers.base import BaseProvider
from workbench.clusters.settings import Settings

if TYPE_CHECKING:
    from keystoneauth1.adapter import Adapter
    from keystoneauth1.session import Session

    from workbench.clusters.models import ClusterStore, Instance

log = logging.getLogger(__name__)

#: the port each datastore listens on: one server per instance, so the usual ports
DEFAULT_PORTS = {"mysql": 3306, "redis": 6379, "postgresql": 5432}
#: the least RAM (MB) a flavor needs to be offered for a datastore
MIN_RAM_MB = {"mysql": 1024, "postgresql": 1024, "redis": 512}
#: where instance directories live on a server (one instance per server)
INSTANCE_ROOT = "/var/lib/workbench"
#: the share of an instance's progress bar its server's build fills (the datastore's preparation
#: follows), so Nova's 0-100 is scaled into this range while the server builds
BUILD_PROGRESS = (5, 30)

_HOST_KEYS = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
#: host key types in order of preference (what the SSH connection will be offered first)
_KEY_PREFERENCE = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512",
                   "ssh-rsa")


def host_key_from_console(output: str) -> str:
    """The preferred ``"type base64"`` host key line cloud-init printed in a console log, or ""."""
    found: dict[str, str] = {}
    for block in _HOST_KEYS.findall(output or ""):
        for line in block.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in _KEY_PREFERENCE:
                found.setdefault(parts[0], f"{parts[0]} {parts[1]}")
    for kind in _KEY_PREFERENCE:
        if kind in found:
            return found[kind]
    return ""


def server_address(server: dict[str, Any]) -> str:
    """The address to reach a Nova server at: ``accessIPv4``, a floating IPv4, a fixed IPv4, then IPv6."""
    if server.get("accessIPv4"):
        return str(server["accessIPv4"])
    candidates: list[tuple[int, str]] = []
    for network in (server.get("addresses") or {}).values():
        for entry in network or []:
            kind = entry.get("OS-EXT-IPS:type", "fixed")
            version = entry.get("version", 4)
            rank = (0 if kind == "floating" else 1) + (0 if version == 4 else 2)
            if entry.get("addr"):
                candidates.append((rank, str(entry["addr"])))
    return min(candidates)[1] if candidates else ""


class OpenStackProvider(BaseProvider):
    """Nova servers and Cinder volumes for cluster instances (see the module docstring).

    Besides the settings (``os_auth_url``, ``os_username``, ``os_password``, ``os_project_id``,
    ``os_flavor``, ``os_network``, ``os_nova_endpoint_type``, the bypass URLs), the constructor
    takes what is rarely changed: ``user_domain`` (Keystone domain of the user, "Default"),
    ``region``, ``poll_interval`` (seconds between status polls), ``request_timeout`` (per HTTP
    request), ``build_timeout`` / ``delete_timeout`` / ``volume_timeout`` (whole waits),
    ``volume_size`` (GB of volumes made by ``attach_volume``), ``ssh_port`` (where the image's sshd
    listens) and ``session`` (a ready keystoneauth session to use instead of one made from the
    settings).
    """

    name = "openstack"
    supports_volumes = True
    supports_snapshots = True

    def __init__(self, settings: Settings, store: ClusterStore | None = None, *, user_domain: str = "Default",
                 region: str | None = None, poll_interval: float = 2.0, request_timeout: float = 30.0,
                 build_timeout: float = 900.0, delete_timeout: float = 300.0, volume_timeout: float = 300.0,
                 volume_size: int = 1, ssh_port: int = 22, session: Session | None = None) -> None:
        super().__init__(settings, store)
        self.user_domain = user_domain
        self.region = region
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.build_timeout = build_timeout
        self.delete_timeout = delete_timeout
        self.volume_timeout = volume_timeout
        self.volume_size = volume_size
        self.ssh_port = ssh_port
        self._session = session
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()
        self._keypair_lock = threading.Lock()

    # -- keystone ---------------------------------------------------------------------------------
    @property
    def interface(self) -> str:
        """The catalog interface from ``os_nova_endpoint_type`` ("publicURL" -> "public")."""
        return (self.settings.os_nova_endpoint_type or "public").removesuffix("URL")

    def session(self) -> Session:
        """The keystoneauth session (made on first use from the ``os_*`` settings)."""
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def _make_session(self) -> Session:
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        s = self.settings
        missing = [option for option in ("os_auth_url", "os_username", "os_password", "os_project_id")
                   if not getattr(s, option)]
        if missing:
            raise ProviderError(f"the OpenStack provider needs {', '.join(missing)} in the settings",
                                provider=self.name, option=missing[0])
        auth_url = s.os_auth_url.rstrip("/")
        if auth_url.endswith("/v2.0"):
            raise ProviderError("Keystone v2.0 is retired: set os_auth_url to the identity v3 endpoint "
                                "(e.g. https://HOST:5000/v3)", provider=self.name, option="os_auth_url",
                                value=s.os_auth_url)
        auth = v3.Password(auth_url=auth_url, username=s.os_username, password=s.os_password,
                           user_domain_name=self.user_domain, project_id=s.os_project_id)
        return ks_session.Session(auth=auth, timeout=self.request_timeout)

    def _adapter(self, service: str) -> Adapter:
        from keystoneauth1.adapter import Adapter

        with self._lock:
            cached = self._adapters.get(service)
        if cached is not None:
            return cached
        overrides = {"compute": self.settings.os_nova_bypass_url, "block-storage": self.settings.os_cinder_bypass_url}
        adapter = Adapter(self.session(), service_type=service, interface=self.interface, region_name=self.region,
                          endpoint_override=overrides.get(service) or None)
        with self._lock:
            self._adapters[service] = adapter
        return adapter

    def _request(self, service: str, method: str, path: str, *, json: Any = None,
                 missing_ok: bool = False, **context: Any) -> Any:
        """One REST call; returns the parsed JSON body (None when empty, or 404 with ``missing_ok``).

        Every failure becomes a ``ProviderError`` with the service, method, path, status and the
        cloud's own message.
        """
        from keystoneauth1 import exceptions as ks

        fields = dict(provider=self.name, service=service, method=method, path=path, **context)
        try:
            response = self._adapter(service).request(path, method, json=json, raise_exc=False)
        except ks.Unauthorized as exc:  # raised while fetching the token
            raise ProviderError(f"OpenStack refused the credentials of user {self.settings.os_username!r} "
                                f"(project {self.settings.os_project_id}) at {self.settings.os_auth_url}: "
                                f"{exc.message}", status=401, **fields) from None
        except ks.EndpointNotFound:
            raise ProviderError(f"the OpenStack catalog has no {self.interface} {service} endpoint",
                                **fields) from None
        except (ks.ConnectTimeout, ks.ConnectFailure) as exc:
            raise ProviderError(f"cannot reach OpenStack {service}: {exc}", **fields) from None
        except ks.RequestTimeout:
            raise ProviderError(f"OpenStack {service} did not answer {method} {path} within "
                                f"{self.request_timeout:g}s", **fields) from None
        except ks.ClientException as exc:
            raise ProviderError(f"OpenStack {service} {method} {path} failed: {exc}", **fields) from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            message = _error_message(response)
            if response.status_code == 401:
                message = f"OpenStack refused the token of user {self.settings.os_username!r}: {message}"
            raise ProviderError(f"{service} {method} {path}: {message} (HTTP {response.status_code})",
                                status=response.status_code, cloud_message=message, **fields)
        if not response.content:
            return {"_location": response.headers.get("Location", "")}
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"{service} {method} {path} answered something that is not JSON",
                                status=response.status_code, **fields) from None
        if isinstance(body, dict) and "Location" in response.headers:
            body.setdefault("_location", response.headers["Location"])
        return body

    def _wait(self, what: str, timeout: float, poll: Callable[[], Any | None], **context: Any) -> Any:
        """Call ``poll`` every ``poll_interval`` until it returns something; ``ProviderError`` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = poll()
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                raise ProviderError(f"gave up waiting for {what} after {timeout:g}s", provider=self.name,
                                    timeout=timeout, **context)
            time.sleep(self.poll_interval)

    # -- servers ----------------------------------------------------------------------------------
    def create(self, instance: Instance, **kwargs: Any) -> None:
        """Boot the server of ``instance`` with the cluster's key, poll to ACTIVE, record where it is.

        ``kwargs`` may name ``flavor`` and ``image`` (ids or names), else ``os_flavor`` and the
        datastore's image are used. Records ``server`` as soon as Nova accepts the request (so a
        failure later can delete it), then ``progress`` while it builds, then ``addr``, ``port``,
        ``user``, ``ssh_host``, ``directory`` and the vouched ``host_key``. The instance's progress
        goes from 5 to 30 as Nova reports the build's (the rest of the bar is the datastore's).
        """
        cluster = instance.cluster
        datastore = cluster.datastore
        flavor = self._flavor_id(kwargs.get("flavor") or self.settings.os_flavor)
        image = self._image_id(kwargs.get("image") or datastore.image)
        request: dict[str, Any] = {"name": instance.name, "imageRef": image, "flavorRef": flavor,
                                   "metadata": {"workbench-cluster": cluster.name, "workbench-instance": instance.name,
                                                "workbench-role": instance.role}}
        key = kwargs.get("key") or cluster.key
        if key is not None:
            request["key_name"] = self._ensure_keypair(key.name, key.public)
        if self.settings.os_network:
            request["networks"] = [{"uuid": self.settings.os_network}]
        created = self._request("compute", "POST", "/servers", json={"server": request}, instance=instance.name)
        server_id = str((created.get("server") or {}).get("id") or "")
        if not server_id:
            raise ProviderError("Nova accepted the server but gave no id", provider=self.name, instance=instance.name)
        self.update(instance, server=server_id, server_status="BUILD", progress=BUILD_PROGRESS[0], message="")
        server = self._wait(f"server {server_id} ({instance.name}) to become ACTIVE", self.build_timeout,
                            lambda: self._poll_build(instance, server_id), server=server_id,
                            instance=instance.name)
        addr = server_address(server)
        if not addr:
            raise ProviderError(f"server {server_id} is ACTIVE but has no address", provider=self.name,
                                server=server_id, instance=instance.name)
        self.update(instance, addr=addr, ssh_host=addr, ssh_port=self.ssh_port, user=self.settings.ssh_user,
                    port=instance.port or DEFAULT_PORTS.get(datastore.manager, 0),
                    directory=instance.directory or f"{INSTANCE_ROOT}/{instance.name}",
                    host_key=self.host_key(instance), server_status="ACTIVE", progress=BUILD_PROGRESS[1])

    def _poll_build(self, instance: Instance, server_id: str) -> dict[str, Any] | None:
        server = self._get_server(server_id, instance)
        status = str(server.get("status", "")).upper()
        if status == "ERROR":
            fault = (server.get("fault") or {}).get("message") or "no fault message"
            self.update(instance, server_status="ERROR", message=fault)
            raise ProviderError(f"server {server_id} ({instance.name}) went to ERROR: {fault}", provider=self.name,
                                server=server_id, instance=instance.name, status="ERROR", fault=fault)
        if status == "ACTIVE":
            return server
        low, high = BUILD_PROGRESS
        progress = low + (high - low) * min(100, int(server.get("progress") or 0)) // 100
        if progress != instance.progress or status != instance.server_status:
            self.update(instance, server_status=status, progress=progress)
        return None

    def _get_server(self, server_id: str, instance: Instance | None = None) -> dict[str, Any]:
        body = self._request("compute", "GET", f"/servers/{server_id}", missing_ok=True, server=server_id)
        if body is None:
            raise ProviderError(f"server {server_id} disappeared", provider=self.name, server=server_id,
                                instance=instance.name if instance else "")
        return body["server"]

    def host_key(self, instance: Instance) -> str:
        """The SSH host key the server printed on its console (one ``type base64`` line), or ""."""
        body = self._request("compute", "POST", f"/servers/{instance.server}/action",
                             json={"os-getConsoleOutput": {"length": 200}}, server=instance.server)
        key = host_key_from_console(str((body or {}).get("output", "")))
        if not key:
            log.warning("server %s printed no SSH host key on its console; SSH will refuse it until its key "
                        "is pinned in known_hosts", instance.server)
        return key

    def destroy(self, instance: Instance) -> None:
        """Delete the server of ``instance`` (and its volume), polling until Nova no longer knows it.

        An instance without a server, or whose server is already gone, is fine.
        """
        server_id = instance.server
        if server_id:
            self._request("compute", "DELETE", f"/servers/{server_id}", missing_ok=True, server=server_id)
            self._wait(f"server {server_id} ({instance.name}) to be deleted", self.delete_timeout,
                       lambda: True if self._request("compute", "GET", f"/servers/{server_id}", missing_ok=True,
                                                     server=server_id) is None else None,
                       server=server_id, instance=instance.name)
            self.update(instance, server_status="DELETED", progress=0)
        if instance.volume:
            self.delete_volume(instance.volume)
            self.update(instance, volume="")

    def update_status(self, instance: Instance) -> tuple[str, int]:
        """Refresh ``server_status``, ``progress`` and ``message`` (the fault) from Nova."""
        if not instance.server:
            raise ProviderError(f"instance {instance.name} has no server", provider=self.name,
                                instance=instance.name)
        body = self._request("compute", "GET", f"/servers/{instance.server}", missing_ok=True,
                             server=instance.server)
        if body is None:
            self.update(instance, server_status="DELETED", progress=0,
                        message=f"server {instance.server} no longer exists")
            return "DELETED", 0
        server = body["server"]
        status = str(server.get("status", "")).upper()
        progress = 100 if status == "ACTIVE" else int(server.get("progress") or 0)
        message = (server.get("fault") or {}).get("message", "") if status == "ERROR" else instance.message
        self.update(instance, server_status=status, progress=progress, message=message or "")
        return status, progress

    # -- flavors, images, keys ----------------------------------------------------------------------
    def flavors(self, datastore: str | None = None) -> list[dict[str, Any]]:
        """Flavors as ``{id, name, ram, vcpus, disk}``; for ``datastore`` ("redis", "mysql-8") only big enough ones."""
        body = self._request("compute", "GET", "/flavors/detail")
        flavors = [{key: flavor.get(key) for key in ("id", "name", "ram", "vcpus", "disk")}
                   for flavor in body.get("flavors", [])]
        if datastore:
            manager = re.split(r"[\s-]", datastore.strip(), maxsplit=1)[0].lower()
            least = MIN_RAM_MB.get(manager, 0)
            flavors = [f for f in flavors if int(f.get("ram") or 0) >= least]
        return sorted(flavors, key=lambda f: (int(f.get("ram") or 0), str(f.get("name"))))

    def _flavor_id(self, ref: str) -> str:
        if not ref:
            raise ProviderError("no flavor: set os_flavor in the settings (see provider.flavors())",
                                provider=self.name, option="os_flavor")
        for flavor in self.flavors():
            if ref in (str(flavor["id"]), flavor["name"]):
                return str(flavor["id"])
        raise ProviderError(f"no flavor {ref!r} in this cloud", provider=self.name, flavor=ref)

    def _image_id(self, ref: str) -> str:
        if not ref:
            raise ProviderError("the datastore has no image to boot: set its image", provider=self.name,
                                field="image")
        if _UUID.match(ref):
            return ref
        body = self._request("image", "GET", f"/v2/images?name={_quote(ref)}", image=ref)
        images = [i for i in body.get("images", []) if i.get("status") == "active"]
        if not images:
            raise ProviderError(f"no active image named {ref!r}", provider=self.name, image=ref)
        if len(images) > 1:
            raise ProviderError(f"{len(images)} images are named {ref!r}: give the datastore an image id",
                                provider=self.name, image=ref)
        return str(images[0]["id"])

    def _ensure_keypair(self, name: str, public: str) -> str:
        """Register the cluster's public key in Nova under ``name`` (once); returns the name.

        The instances of a cluster boot in parallel: one thread registers, the others find it.
        """
        with self._keypair_lock:
            if self._keypair_matches(name, public):
                return name
            try:
                self._request("compute", "POST", "/os-keypairs",
                              json={"keypair": {"name": name, "public_key": public}}, keypair=name)
            except ProviderError as exc:
                # registered meanwhile by another process: fine if it is the same key
                if exc.fields.get("status") != 409 or not self._keypair_matches(name, public):
                    raise
            return name

    def _keypair_matches(self, name: str, public: str) -> bool:
        """False when Nova has no key pair ``name``; ``ProviderError`` when it has a different one."""
        body = self._request("compute", "GET", f"/os-keypairs/{_quote(name)}", missing_ok=True, keypair=name)
        if body is None:
            return False
        existing = " ".join(str(body["keypair"].get("public_key", "")).split()[:2])
        if existing != " ".join(public.split()[:2]):
            raise ProviderError(f"Nova already has a different key pair named {name!r}", provider=self.name,
                                keypair=name)
        return True

    # -- snapshots ----------------------------------------------------------------------------------
    def snapshot(self, instance: Instance) -> str:
        """Image the server of ``instance`` (Nova createImage) and wait until Glance has it active."""
        if not instance.server:
            raise ProviderError(f"instance {instance.name} has no server to snapshot", provider=self.name,
                                instance=instance.name)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        body = self._request("compute", "POST", f"/servers/{instance.server}/action",
                             json={"createImage": {"name": f"{instance.name}-{stamp}",
                                                   "metadata": {"workbench-instance": instance.name}}},
                             server=instance.server)
        image_id = str(body.get("image_id") or body.get("_location", "").rstrip("/").rsplit("/", 1)[-1])
        if not image_id:
            raise ProviderError("Nova accepted the snapshot but named no image", provider=self.name,
                                server=instance.server)

        def ready() -> str | None:
            image = self._request("image", "GET", f"/v2/images/{image_id}", image=image_id)
            if image.get("status") == "active":
                return image_id
            if image.get("status") in ("killed", "deleted", "deactivated"):
                raise ProviderError(f"snapshot image {image_id} of {instance.name} ended {image.get('status')}",
                                    provider=self.name, image=image_id, instance=instance.name)
            return None

        return self._wait(f"snapshot image {image_id} of {instance.name}", self.volume_timeout, ready,
                          image=image_id, instance=instance.name)

    # -- volumes ----------------------------------------------------------------------------------
    def create_volume(self, instance: Instance, size_gb: int | None = None) -> str:
        """Create a Cinder volume for ``instance`` and wait until it is available; records ``volume``."""
        size = size_gb or self.volume_size
        body = self._request("block-storage", "POST", "/volumes",
                             json={"volume": {"size": size, "name": f"{instance.name}-data",
                                              "metadata": {"workbench-instance": instance.name}}},
                             instance=instance.name)
        volume_id = str(body["volume"]["id"])
        self.update(instance, volume=volume_id)
        self._wait_volume(volume_id, "available", instance)
        return volume_id

    def attach_volume(self, instance: Instance, volume_id: str | None = None) -> str:
        """Attach ``volume_id`` (a new volume when None) to the server of ``instance``; wait until in-use."""
        if not instance.server:
            raise ProviderError(f"instance {instance.name} has no server to attach a volume to",
                                provider=self.name, instance=instance.name)
        volume_id = volume_id or self.create_volume(instance)
        body = self._request("compute", "POST", f"/servers/{instance.server}/os-volume_attachments",
                             json={"volumeAttachment": {"volumeId": volume_id}}, server=instance.server,
                             volume=volume_id)
        device = (body.get("volumeAttachment") or {}).get("device", "")
        self._wait_volume(volume_id, "in-use", instance)
        self.update(instance, volume=volume_id)
        log.info("volume %s attached to %s as %s", volume_id, instance.name, device)
        return volume_id

    def volume_device(self, instance: Instance) -> str:
        """The device path (e.g. /dev/vdb) the volume of ``instance`` is attached as, or ""."""
        if not (instance.server and instance.volume):
            return ""
        body = self._request("compute", "GET", f"/servers/{instance.server}/os-volume_attachments",
                             server=instance.server)
        for attachment in body.get("volumeAttachments", []):
            if attachment.get("volumeId") == instance.volume:
                return str(attachment.get("device", ""))
        return ""

    def _wait_volume(self, volume_id: str, wanted: str, instance: Instance) -> dict[str, Any]:
        def poll() -> dict[str, Any] | None:
            volume = self._request("block-storage", "GET", f"/volumes/{volume_id}", volume=volume_id)["volume"]
            if volume.get("status") == wanted:
                return volume
            if str(volume.get("status", "")).startswith("error"):
                raise ProviderError(f"volume {volume_id} of {instance.name} went to {volume.get('status')}",
                                    provider=self.name, volume=volume_id, instance=instance.name,
                                    status=volume.get("status"))
            return None

        return self._wait(f"volume {volume_id} of {instance.name} to be {wanted}", self.volume_timeout, poll,
                          volume=volume_id, instance=instance.name)

    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume and wait until it is gone; a volume still detaching is waited for first."""
        def detached() -> bool | None:
            body = self._request("block-storage", "GET", f"/volumes/{volume_id}", missing_ok=True, volume=volume_id)
            status = (body or {}).get("volume", {}).get("status")
            return None if status in ("in-use", "attaching", "detaching") else True

        # a server's deletion detaches its volumes asynchronously; Cinder refuses to delete them until then
        self._wait(f"volume {volume_id} to be detached", self.volume_timeout, detached, volume=volume_id)
        self._request("block-storage", "DELETE", f"/volumes/{volume_id}", missing_ok=True, volume=volume_id)
        self._wait(f"volume {volume_id} to be deleted", self.volume_timeout,
                   lambda: True if self._request("block-storage", "GET", f"/volumes/{volume_id}",
                                                 missing_ok=True, volume=volume_id) is None else None,
                   volume=volume_id)

    def close(self) -> None:
        """Close the HTTP session's connections."""
        with self._lock:
            session, self._adapters = self._session, {}
        if session is not None:
            session.session.close()


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _error_message(response: Any) -> str:
    """The message of an OpenStack error body (``{"badRequest": {"message": ...}}``, ``{"error": ...}``...)."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:500]
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and value.get("message"):
                return str(value["message"])
        if isinstance(body.get("message"), str):
            return body["message"]
    return str(body)[:500]


__all__ = ["OpenStackProvider", "host_key_from_console", "server_address", "DEFAULT_PORTS"]
