"""A client of the clusters HTTP API: JSON in, JSON out, the API's errors raised as the library's classes.

::

    with ClustersClient("http://127.0.0.1:8780", token="s3cret") as client:
        client.create_cluster("cache", "redis-7", size=3)
        client.cluster("cache")["status"]                      # "building", then "active"
        client.cluster("nope")                                 # NotFoundError('no cluster nope', cluster='nope')

Errors are translated here, at the boundary: an error answer's envelope becomes the class
``errors.CLUSTERS_ERRORS`` declares for its ``kind`` (``ValidationError``, ``NotFoundError``,
``TokenRequired``, ``TaskError``...) with the server's fields, a kind this library does not know a
``ClustersError`` with ``kind`` (and ``status``) fields; no answer at all is a ``ConnectionFailed``.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote, urlsplit

from workbench.clusters.errors import CLUSTERS_ERRORS, ConnectionFailed
from workbench.errors import ConfigurationError


class ClustersClient:
    """The API at ``url`` (``http://HOST:PORT``), every request with ``token``; one connection per request."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigurationError("the clusters API's address looks like http://HOST:PORT", url=url)
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<ClustersClient {self.url}>"  # never the token

    def __enter__(self) -> ClustersClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None  # nothing held between requests

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON answer to ``method path`` (below ``/api``); an error answer raised as its class."""
        payload = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, "/api" + path, body=payload,
                               headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"})
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionFailed(f"cannot reach the clusters API: {exc}", host=self.host, port=self.port,
                                   reason=type(exc).__name__) from None
        finally:
            connection.close()
        try:
            document = json.loads(raw or b"{}")
        except ValueError:
            document = None
        if not isinstance(document, dict):
            document = {"kind": "HTTPError", "message": f"HTTP {status}: the answer is not a JSON object"}
        if status >= 400:
            raise _error_of(status, document)
        return document

    # -- the routes (see api) -----------------------------------------------------------------------------
    def datastores(self) -> list[dict[str, Any]]:
        return self.request("GET", "/datastores")["datastores"]

    def add_datastore(self, manager: str, version: str, **options: Any) -> dict[str, Any]:
        """Register a datastore (``image``, ``packages`` optional)."""
        return self.request("POST", "/datastores", {"manager": manager, "version": version, **options})["datastore"]

    def clusters(self) -> list[dict[str, Any]]:
        return self.request("GET", "/clusters")["clusters"]

    def cluster(self, ref: str | int) -> dict[str, Any]:
        """One cluster (by id or name) with its instances."""
        return self.request("GET", f"/clusters/{_segment(ref)}")["cluster"]

    def create_cluster(self, name: str, datastore: str | int, **options: Any) -> dict[str, Any]:
        """Start building a cluster (``version``, ``size``, ``provider``, ``restore_from``); ``{"cluster", "task"}``."""
        return self.request("POST", "/clusters", {"name": name, "datastore": datastore, **options})

    def destroy_cluster(self, ref: str | int) -> dict[str, Any]:
        return self.request("DELETE", f"/clusters/{_segment(ref)}")

    def add_nodes(self, ref: str | int, count: int = 1) -> dict[str, Any]:
        return self.request("POST", f"/clusters/{_segment(ref)}/nodes", {"count": count})

    def backups(self, ref: str | int) -> list[dict[str, Any]]:
        return self.request("GET", f"/clusters/{_segment(ref)}/backups")["backups"]

    def back_up(self, ref: str | int) -> dict[str, Any]:
        return self.request("POST", f"/clusters/{_segment(ref)}/backups")["task"]

    def perform(self, ref: str | int, command: str) -> dict[str, Any]:
        """Run the shell line ``command`` on each instance (``$WB_PORT``... set); the task, output in its log."""
        return self.request("POST", f"/clusters/{_segment(ref)}/perform", {"command": command})["task"]

    def configurations(self) -> list[dict[str, Any]]:
        return self.request("GET", "/configurations")["configurations"]

    def configuration(self, ref: str | int) -> dict[str, Any]:
        return self.request("GET", f"/configurations/{_segment(ref)}")["configuration"]

    def create_configuration(self, name: str, datastore: str | int, values: dict[str, Any],
                             **options: Any) -> dict[str, Any]:
        """A configuration group of ``datastore`` (``version``, ``description`` optional)."""
        body = {"name": name, "datastore": datastore, "values": values, **options}
        return self.request("POST", "/configurations", body)["configuration"]

    def update_configuration(self, ref: str | int, values: dict[str, Any], replace: bool = False,
                             **options: Any) -> dict[str, Any]:
        """Merge ``values`` into a group (``replace``: instead of its values); ``{"configuration", "task"}``."""
        return self.request("PUT" if replace else "PATCH", f"/configurations/{_segment(ref)}",
                            {"values": values, **options})

    def delete_configuration(self, ref: str | int) -> dict[str, Any]:
        return self.request("DELETE", f"/configurations/{_segment(ref)}")["configuration"]

    def configure(self, ref: str | int, configuration: str | int | None) -> dict[str, Any]:
        """Attach a configuration group to every instance of a cluster (None: detach); the task."""
        return self.request("PUT", f"/clusters/{_segment(ref)}/configuration", {"configuration": configuration})["task"]

    def schedule(self, ref: str | int) -> dict[str, Any] | None:
        return self.request("GET", f"/clusters/{_segment(ref)}/schedule")["schedule"]

    def set_schedule(self, ref: str | int, interval: int, keep: int) -> dict[str, Any]:
        """Back up the cluster every ``interval`` seconds, keeping the newest ``keep`` scheduled backups."""
        return self.request("PUT", f"/clusters/{_segment(ref)}/schedule", {"interval": interval, "keep": keep})["schedule"]

    def delete_schedule(self, ref: str | int) -> None:
        self.request("DELETE", f"/clusters/{_segment(ref)}/schedule")

    def task(self, task_id: int) -> dict[str, Any]:
        return self.request("GET", f"/tasks/{int(task_id)}")["task"]


def _segment(ref: str | int) -> str:
    return quote(str(ref), safe="")


def _error_of(status: int, document: dict[str, Any]) -> Exception:
    """The exception an error answer stands for; the HTTP status rides along for kinds not declared."""
    envelope = {**document, "message": document.get("message") or document.get("error")}
    if envelope.get("kind") not in CLUSTERS_ERRORS.classes:
        fields = document.get("fields")
        envelope["fields"] = {"status": status, **(fields if isinstance(fields, dict) else {})}
    return CLUSTERS_ERRORS.error(envelope)


__all__ = ["ClustersClient"]
