"""Finding web modules: the built-in package and configured directories, read through their exports.

A module is a file ``NAME.py`` or a package ``NAME/__init__.py``; ``NAME`` becomes the first part
of its URLs and its ``export_web`` / ``export_data`` dicts map the second part to a
``WebModule`` subclass. Names starting with ``_`` are private and skipped. A module that fails to
import, or exports anything but ``WebModule`` subclasses, stops the server from starting with a
``ModuleLoadError`` that names the file: a page silently missing would be worse.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from workbench.inventory.web import modules as builtin_package
from workbench.inventory.web.errors import ModuleLoadError
from workbench.inventory.web.modules._base import Configuration, WebModule

EXPORTS = ("export_web", "export_data")


@dataclass
class ModuleRegistry:
    """The instantiated exports of every module: ``web[(module, name)]`` and ``data[(module, name)]``."""

    web: dict[tuple[str, str], WebModule] = field(default_factory=dict)
    data: dict[tuple[str, str], WebModule] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # module name -> where it was loaded from

    def exports(self, kind: str) -> dict[tuple[str, str], WebModule]:
        return self.web if kind == "web" else self.data

    @property
    def module_names(self) -> list[str]:
        return sorted(self.origins)


def _load_file(path: Path, name: str) -> ModuleType:
    """Import ``NAME.py`` or the package ``NAME/`` under a private name unique to its directory."""
    tag = hashlib.sha256(str(path.parent.resolve()).encode()).hexdigest()[:12]
    qualified = f"_workbench_web_{tag}_{name}"
    is_package = path.is_dir()
    location = path / "__init__.py" if is_package else path
    spec = importlib.util.spec_from_file_location(
        qualified, location, submodule_search_locations=[str(path)] if is_package else None)
    if spec is None or spec.loader is None:
        raise ModuleLoadError("not an importable web module", path=str(location))
    module = importlib.util.module_from_spec(spec)
    # A package's own relative imports (``from . import abc``) look it up in sys.modules.
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(qualified, None)
        raise ModuleLoadError(f"web module failed to import: {type(exc).__name__}: {exc}",
                              module=name, path=str(location)) from exc
    return module


def _directory_modules(directory: Path) -> Iterable[tuple[str, Path]]:
    if not directory.is_dir():
        raise ModuleLoadError("web module directory does not exist", path=str(directory))
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            yield entry.stem, entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            yield entry.name, entry


def _builtin_modules() -> Iterable[tuple[str, ModuleType]]:
    for info in sorted(pkgutil.iter_modules(builtin_package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"{builtin_package.__name__}.{info.name}")


def _register(registry: ModuleRegistry, name: str, module: ModuleType, origin: str,
              config: Mapping[str, Any]) -> None:
    if name in registry.origins:
        raise ModuleLoadError(f"two web modules are named {name!r}", module=name,
                              first=registry.origins[name], second=origin)
    exports = {kind: getattr(module, kind, None) for kind in EXPORTS}
    if all(value is None for value in exports.values()):
        return  # a helper file next to the modules: nothing to serve
    registry.origins[name] = origin
    module_config = Configuration(config.get(name) or {})
    for kind, exported in exports.items():
        if exported is None:
            continue
        if not isinstance(exported, Mapping):
            raise ModuleLoadError(f"{kind} must be a dict of name -> class", module=name, path=origin)
        for page, cls in exported.items():
            if not isinstance(page, str) or "/" in page:
                raise ModuleLoadError(f"{kind} names must be strings without '/'", module=name, page=page)
            if not (isinstance(cls, type) and issubclass(cls, WebModule)):
                raise ModuleLoadError(f"{kind}[{page!r}] is not a WebModule subclass", module=name,
                                      path=origin, value=repr(cls))
            try:
                instance = cls(module_config)
            except Exception as exc:
                raise ModuleLoadError(f"{cls.__name__}(config) failed: {type(exc).__name__}: {exc}",
                                      module=name, path=origin) from exc
            registry.exports(kind.removeprefix("export_"))[(name, page)] = instance


def discover(directories: Iterable[str | Path] = (), config: Mapping[str, Mapping[str, Any]] | None = None,
             builtin: bool = True) -> ModuleRegistry:
    """Load the built-in modules (unless ``builtin`` is false) and those of ``directories``.

    ``config`` maps a module name to the parameters its classes get as ``Configuration``.
    """
    registry = ModuleRegistry()
    config = config or {}
    if builtin:
        for name, module in _builtin_modules():
            _register(registry, name, module, module.__name__, config)
    for directory in directories:
        for name, path in _directory_modules(Path(directory)):
            _register(registry, name, _load_file(path, name), str(path), config)
    return registry


__all__ = ["ModuleRegistry", "discover"]
