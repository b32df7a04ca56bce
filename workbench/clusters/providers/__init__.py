"""Providers of servers for cluster instances: local (default), static SSH hosts, OpenStack.

``get_provider()`` returns the provider named by the settings (the seed's ``get_provider``)::

    provider = get_provider(settings)            # settings.provider, e.g. "local"
    provider = get_provider(settings, "static")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from workbench.clusters.errors import ProviderError, SettingsError
from workbench.clusters.providers.base import BaseProvider
from workbench.clusters.settings import Settings

if TYPE_CHECKING:
    from workbench.clusters.models import ClusterStore


def load_object(path: str, option: str) -> type:
    """Import ``"module:Class"`` (or the seed's ``"module.Class"``), with a ``SettingsError`` naming ``option``."""
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"cannot load {path!r} from {option}: {exc}", option=option, value=path) from None


def get_provider(settings: Settings | None = None, name: str | None = None,
                 store: ClusterStore | None = None) -> BaseProvider:
    """An instance of the provider ``name`` (default ``settings.provider``)."""
    settings = settings or Settings.load()
    name = name or settings.provider
    if name not in settings.providers:
        raise SettingsError(f"unknown provider {name!r}; known: {', '.join(sorted(settings.providers))}",
                            option="provider", value=name)
    cls = load_object(settings.providers[name], "providers")
    if not (isinstance(cls, type) and issubclass(cls, BaseProvider)):
        raise SettingsError(f"{settings.providers[name]} is not a BaseProvider", option="providers", value=name)
    return cls(settings, store)


__all__ = ["BaseProvider", "ProviderError", "get_provider", "load_object"]
