"""Errors of the inventory web server, each mapped to the HTTP status it is answered with.

::

    InventoryError                 workbench.errors
    +-- WebError                   status 500 unless a subclass says otherwise
        +-- BadRequest             400: a parameter is missing, malformed or out of range
        +-- AuthenticationRequired 401: the page needs a client certificate and none was shown
        +-- Forbidden              403: the certificate's user lacks the role the page needs
        +-- NotFound               404: no such module, page or object
        +-- MethodNotAllowed       405: a page that changes the inventory was asked with GET
        +-- WriteConflict          409: another writer holds the inventory
        +-- InventoryUnavailable   503: the inventory is not loaded (yet)
        +-- ModuleLoadError        a web module could not be imported or exports something wrong

A web module raises them from ``run``; the server turns them into the status and a message (an
HTML page under ``/web``, the JSON envelope under ``/data``).
"""

from __future__ import annotations

from workbench.errors import InventoryError


class WebError(InventoryError):
    """Base of the web server's errors; ``status`` is the HTTP status answered."""

    status = 500


class BadRequest(WebError):
    """A request parameter is missing, malformed or out of range (fields: parameter, value)."""

    status = 400


class AuthenticationRequired(WebError):
    """The page changes the inventory and the request came without a client certificate."""

    status = 401


class Forbidden(WebError):
    """The caller is known but lacks the role the page needs (fields: user, required)."""

    status = 403


class NotFound(WebError):
    """No such module, page or inventory object."""

    status = 404


class MethodNotAllowed(WebError):
    """A page that changes the inventory answers POST only."""

    status = 405


class WriteConflict(WebError):
    """Another writer holds the inventory; try again later."""

    status = 409


class InventoryUnavailable(WebError):
    """The inventory is not loaded (the server is starting, reloading or out of sync)."""

    status = 503


class ModuleLoadError(WebError):
    """A web module failed to import or exports something that is not a web module class."""


__all__ = ["WebError", "BadRequest", "AuthenticationRequired", "Forbidden", "NotFound", "MethodNotAllowed",
           "WriteConflict",
           "InventoryUnavailable", "ModuleLoadError"]
