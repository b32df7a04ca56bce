"""A minimal Keystone v3 identity endpoint, so OpenStack clients log in to the clusters API by password.

Served beside the Trove API under ``/identity/v3``: ``openstack --os-auth-url URL/identity/v3
--os-username ANY --os-password TOKEN --os-project-name P database cluster list`` works. There are no
users here: the password is the API token (the one ``/api`` and ``/v1.0`` take), and the token issued
is that token, so it is checked exactly as when a client presents it itself. Routes::

    GET  /identity/v3                 the version document (discovery; no token needed)
    POST /identity/v3/auth/tokens     {"auth": {"identity": {"methods": ["password"] or ["token"], ...},
                                       "scope": {"project": {"name" or "id"}}?}}
                                      -> 201, X-Subject-Token, {"token": {..., "catalog": [database,
                                         identity]}}; a wrong password or token: 401
    GET  /identity/v3/auth/tokens     X-Subject-Token checked -> 200 the same token body, else 404

Errors are Keystone's, ``{"error": {"code", "title", "message"}}``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import tornado.web

if TYPE_CHECKING:
    from workbench.clusters.api import ClustersApi

#: the region every endpoint of the catalog is in (clients that name none take any)
REGION = "RegionOne"
#: the project of a token asked for without a scope
DEFAULT_PROJECT = "workbench"
#: what a token is said to last: the API token itself does not expire, clients only want a date
TOKEN_LIFETIME = dt.timedelta(hours=24)
TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}


class _IdentityError(tornado.web.HTTPError):
    """A Keystone error to answer with (``status``, ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.message = message


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class IdentityHandler(tornado.web.RequestHandler):
    """Base of the identity routes: the API, JSON replies, Keystone's error body."""

    def initialize(self, api: ClustersApi) -> None:
        self.api = api

    def check_xsrf_cookie(self) -> None:  # token-authenticated API: no cookies, no forms
        return None

    @property
    def auth_url(self) -> str:
        return f"{self.request.protocol}://{self.request.host}/identity/v3"

    def answer(self, body: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(body)  # tornado writes a dict as JSON, with its Content-Type

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = error.message if isinstance(error, _IdentityError) else self._reason
        self.answer({"error": {"code": status_code, "title": TITLES.get(status_code, self._reason),
                               "message": message}}, status_code)

    def token_body(self, methods: list[str], user: str, project: str) -> dict[str, Any]:
        """The body of a token scoped to ``project``: its catalog points at the Trove API of that project."""
        now = dt.datetime.now(dt.timezone.utc)
        base = f"{self.request.protocol}://{self.request.host}"

        def endpoints(url: str) -> list[dict[str, str]]:
            return [{"id": f"{interface}-{url}", "interface": interface, "region": REGION, "region_id": REGION,
                     "url": url} for interface in ("public", "internal", "admin")]

        domain = {"id": "default", "name": "Default"}
        return {"token": {
            "methods": methods, "issued_at": _stamp(now), "expires_at": _stamp(now + TOKEN_LIFETIME),
            "audit_ids": [], "user": {"id": user, "name": user, "domain": domain},
            "project": {"id": project, "name": project, "domain": domain},
            "roles": [{"id": "admin", "name": "admin"}, {"id": "member", "name": "member"}],
            "catalog": [
                {"type": "database", "name": "trove", "id": "trove",
                 "endpoints": endpoints(f"{base}/v1.0/{project}")},
                {"type": "identity", "name": "keystone", "id": "keystone", "endpoints": endpoints(self.auth_url)},
            ]}}


class VersionHandler(IdentityHandler):
    def get(self) -> None:
        self.answer({"version": {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                                 "links": [{"rel": "self", "href": self.auth_url + "/"}],
                                 "media-types": [{"base": "application/json",
                                                  "type": "application/vnd.openstack.identity-v3+json"}]}})


class TokensHandler(IdentityHandler):
    def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"null")
            auth = body["auth"]
            identity = auth["identity"]
            methods = list(identity["methods"])
        except (ValueError, RecursionError, KeyError, TypeError):
            raise _IdentityError(400, "Expecting to find auth.identity.methods in the request body") from None
        if methods == ["password"]:
            user = (identity.get("password") or {}).get("user") or {}
            presented, name = str(user.get("password") or ""), str(user.get("name") or user.get("id") or "")
        elif methods == ["token"]:
            presented, name = str((identity.get("token") or {}).get("id") or ""), "token"
        else:
            raise _IdentityError(401, "Unsupported authentication method (password or token).")
        if not name or not self.api.token_matches(presented):
            raise _IdentityError(401, "The request you have made requires authentication.")
        scope = (auth.get("scope") or {}) if isinstance(auth.get("scope"), dict) else {}
        project = scope.get("project") or {}
        project_id = str(project.get("id") or project.get("name") or DEFAULT_PROJECT)
        self.set_header("X-Subject-Token", presented)
        self.answer(self.token_body(methods, name, project_id), 201)

    def get(self) -> None:
        if not self.api.token_matches(self.request.headers.get("X-Auth-Token", "")):
            raise _IdentityError(401, "The request you have made requires authentication.")
        subject = self.request.headers.get("X-Subject-Token", "")
        if not self.api.token_matches(subject):
            raise _IdentityError(404, "Could not find token.")
        self.set_header("X-Subject-Token", subject)
        self.answer(self.token_body(["token"], "token", DEFAULT_PROJECT))


def identity_routes(api: ClustersApi) -> list[tuple[str, type[IdentityHandler], dict[str, Any]]]:
    """The identity routes of ``api`` (a ``ClustersApi``: its token)."""
    return [(r"/identity/v3/?", VersionHandler, {"api": api}),
            (r"/identity/v3/auth/tokens/?", TokensHandler, {"api": api})]


__all__ = ["identity_routes", "IdentityHandler", "REGION"]
