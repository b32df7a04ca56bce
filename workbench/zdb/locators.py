"""Who finds the endpoint of a ``zdb://broker/dbname`` database: a locator the domain registers.

zdb knows nothing of the domain: the domain package registers its ``locate_database`` here when
it is imported. A ``zdb://`` URI used before anything imported it loads the package that provides
locators by name (``workbench.domain``), as a plugin is loaded, so ``connect("zdb://...")`` works
from a fresh process too.
"""

from __future__ import annotations

import importlib
from typing import Callable

from workbench.errors import ZdbError

#: ``locate(broker "host:port", database) -> a TE's zdb endpoint``
Locator = Callable[[str, str], str]

#: the package that registers a locator when imported
DEFAULT_PROVIDER = "workbench.domain"

_locator: Locator | None = None


def register_locator(locate: Locator) -> None:
    """Make ``locate`` the way ``zdb://`` URIs are resolved (the last registered wins)."""
    global _locator
    _locator = locate


def locate(broker: str, database: str) -> str:
    """The endpoint of ``database`` as the registered locator finds it."""
    if _locator is None:
        importlib.import_module(DEFAULT_PROVIDER)
    if _locator is None:
        raise ZdbError("no locator for zdb:// URIs is registered", provider=DEFAULT_PROVIDER)
    return _locator(broker, database)


__all__ = ["DEFAULT_PROVIDER", "Locator", "locate", "register_locator"]
