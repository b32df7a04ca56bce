"""The inventory's web side: a tornado server of ``/web`` pages and ``/data`` JSON from web modules.

::

    from workbench.inventory.web import WebServer
    with WebServer(inventory, port=8081, module_dirs=["./mymodules"]) as server:
        print(server.url + "/web/inventory/datasets")

Modules are files exporting ``export_web`` / ``export_data`` dicts of ``WebModule`` subclasses
(see ``modules._base``); the built-in module ``inventory`` serves datasets, sites, groups,
replicas, stats, and inject/delete for users whose client certificate carries the ``write`` role.
"""

from __future__ import annotations

from workbench.inventory.web.auth import ANONYMOUS, WRITE_ROLE, TLSConfig, User, UserMap
from workbench.inventory.web.errors import (AuthenticationRequired, BadRequest, Forbidden, InventoryUnavailable,
                                            MethodNotAllowed, ModuleLoadError, NotFound, WebError,
                                            WriteConflict)
from workbench.inventory.web.modules._base import Configuration, HTMLMixin, WebModule
from workbench.inventory.web.page import PageLayout
from workbench.inventory.web.server import DEFAULT_WEB_PORT, WebServer

__all__ = ["ANONYMOUS", "DEFAULT_WEB_PORT", "WRITE_ROLE", "AuthenticationRequired", "BadRequest", "Configuration",
           "Forbidden", "HTMLMixin", "InventoryUnavailable", "MethodNotAllowed", "ModuleLoadError", "NotFound",
           "PageLayout", "TLSConfig", "User", "UserMap", "WebError", "WebModule", "WebServer", "WriteConflict"]
