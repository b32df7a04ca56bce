"""What a web module is: ``WebModule`` (``__init__(config)``, ``run(caller, request, inventory)``),
``HTMLMixin`` for ``/web`` pages, the ``Configuration`` handed to constructors, and parameter readers.

A module file exports its classes by name::

    from workbench.inventory.web.modules._base import HTMLMixin, WebModule, text

    class Hello(HTMLMixin, WebModule):
        def run(self, caller, request, inventory):
            return self.html_page("Hello", "<p>Hello {{ who }}</p>", caller, who=text(request, "who", "world"))

    class Count(WebModule):
        def run(self, caller, request, inventory):
            return {"datasets": len(inventory.datasets)}

    export_web = {"hello": Hello}
    export_data = {"count": Count}

``/web/<file>/hello`` then answers the page and ``/data/<file>/count`` the JSON envelope
``{"result": "OK", "message": "", "data": {"datasets": ...}}``. The parameter readers raise
``BadRequest`` (400) with the parameter's name, so a module never hand-writes that check.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

from workbench.inventory.web.auth import WRITE_ROLE, User
from workbench.inventory.web.errors import BadRequest
from workbench.inventory.web.page import Markup, PageLayout

#: a request: parameter name -> a string, or a list of strings when the parameter was repeated
#: (JSON bodies may carry structured values)
Request = Mapping[str, Any]

_MISSING: Any = object()


class Configuration(dict):
    """The parameters of one module from the web modules configuration, readable as attributes.

    ::

        config = Configuration({"page_size": 50})
        config.page_size, config.get("title", "Datasets")
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class WebModule:
    """Base of every class in ``export_web`` / ``export_data``.

    The server makes one instance per exported name at start, passing the module's
    ``Configuration``, and calls ``run`` for each request (possibly from several threads: keep
    per-request state in locals). ``run`` returns an HTML string for ``/web`` and a JSON-able
    value for ``/data``. A module that changes the inventory sets ``write_enabled = True``: the
    server then admits only authenticated callers holding ``required_role`` and runs one such
    request at a time.
    """

    write_enabled: bool = False
    required_role: str = WRITE_ROLE
    #: a ``/web`` page with a label is linked from the navigation bar of every page
    nav_label: str | None = None

    def __init__(self, config: Configuration) -> None:
        self.config = config

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        """Answer one request. ``caller`` is the ``User``; ``inventory`` the server's image."""
        raise NotImplementedError


class HTMLMixin:
    """Helpers for ``/web`` pages: the shared layout, tables and links, all escaped.

    The server sets ``layout`` to its own ``PageLayout`` (navigation of its modules).
    """

    layout: PageLayout = PageLayout()

    def html_page(self, title: str, body: str | Markup, caller: User | None = None, **context: Any) -> str:
        """A whole page in the shared layout; ``body`` is a template string rendered with ``context``."""
        user = "" if caller is None else (caller.name if caller.authenticated else "anonymous (read-only)")
        return self.layout.page(title, body, user=user, **context)

    def html_table(self, columns: Sequence[str], rows: Any, empty: str = "nothing to show") -> Markup:
        return self.layout.table(columns, rows, empty=empty)

    def html_link(self, href: str, text: Any) -> Markup:
        return self.layout.link(href, text)

    def html_fragment(self, source: str, **context: Any) -> Markup:
        return self.layout.fragment(source, **context)


# -- parameter readers ----------------------------------------------------------------------------

def text(request: Request, name: str, default: Any = _MISSING) -> Any:
    """The one string value of ``name``; ``default`` when absent (400 when absent without default)."""
    value = request.get(name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise BadRequest(f"parameter {name!r} is required", parameter=name)
        return default
    if isinstance(value, list):
        if len(value) != 1:
            raise BadRequest(f"parameter {name!r} takes one value", parameter=name, value=value)
        value = value[0]
    if not isinstance(value, str):
        raise BadRequest(f"parameter {name!r} must be a string", parameter=name, value=value)
    return value


def texts(request: Request, name: str) -> list[str]:
    """Every value of ``name`` (repeated, or comma separated), in order; empty when absent."""
    value = request.get(name)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in values):
        raise BadRequest(f"parameter {name!r} must be strings", parameter=name, value=value)
    return [part for item in values for part in item.split(",") if part]


def integer(request: Request, name: str, default: int, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """An integer parameter within [minimum, maximum]."""
    raw = text(request, name, None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be an integer", parameter=name, value=raw) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise BadRequest(f"parameter {name!r} must be between {minimum} and {maximum}", parameter=name,
                         value=value)
    return value


def choice(request: Request, name: str, choices: Sequence[str], default: str | None = None) -> str | None:
    """One of ``choices``."""
    value = text(request, name, default)
    if value is not None and value not in choices:
        raise BadRequest(f"parameter {name!r} must be one of {', '.join(choices)}", parameter=name,
                         value=value)
    return value


def flag(request: Request, name: str) -> bool:
    """A boolean: absent or ``0``/``false``/``no`` is False; ``1``/``true``/``yes``/empty is True."""
    value = text(request, name, None)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("", "1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise BadRequest(f"parameter {name!r} must be true or false", parameter=name, value=value)


def pattern(request: Request, name: str) -> re.Pattern[str] | None:
    """A shell-style wildcard (``*``, ``?``, ``[...]``) as a compiled, anchored expression; None if absent."""
    value = text(request, name, None)
    if value is None or value in ("", "*"):
        return None
    if len(value) > 1000:
        raise BadRequest(f"parameter {name!r} is too long", parameter=name, value=value[:50] + "...")
    return re.compile(fnmatch.translate(value))


__all__ = ["Configuration", "HTMLMixin", "Request", "WebModule", "choice", "flag", "integer", "pattern",
           "text", "texts"]
