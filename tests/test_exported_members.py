"""Each package's ``__all__`` is its public API, and the extension uses nothing else of the library."""

from __future__ import annotations

import ast
import importlib
import pathlib
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ["workbench", "workbench.domain", "workbench.zdb", "workbench.commits", "workbench.clusters",
            "workbench.inventory"]
# Top-level modules of the library that are public on their own (each with its ``__all__``), and the
# one module applications import by contract (DESIGN: ``from workbench.inventory.executable import ...``).
PUBLIC_MODULES = ["workbench.errors", "workbench.events", "workbench.stack", "workbench.inventory.executable",
                  "workbench.servers", "workbench.httpserver", "workbench.framing"]


@pytest.mark.parametrize("name", PACKAGES + PUBLIC_MODULES)
def test_all_names_exist_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), [n for n in exported if exported.count(n) > 1]
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_members_are_exported(name: str) -> None:
    """Every public name a package's ``__init__`` binds (not a submodule) is in its ``__all__``."""
    module = importlib.import_module(name)
    public = {n for n, v in vars(module).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)
              and str(getattr(v, "__module__", "workbench")).startswith("workbench")}
    unlisted = sorted(public - set(module.__all__))
    assert not unlisted, f"{name} binds public names missing from __all__: {unlisted}"


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_objects_come_from_workbench(name: str) -> None:
    module = importlib.import_module(name)
    foreign = []
    for member in module.__all__:
        value = getattr(module, member)
        home = getattr(value, "__module__", None)
        if home is not None and (isinstance(value, type) or callable(value)) and not home.startswith("workbench"):
            foreign.append((member, home))
    assert not foreign, f"{name} re-exports objects from outside workbench: {foreign}"


def library_imports(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of each ``from workbench... import name`` in a file, in functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("workbench"):
            if node.module == "workbench_jupyter" or node.module.startswith("workbench_jupyter."):
                continue
            found.extend((node.lineno, node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, "") for alias in node.names
                         if alias.name.split(".")[0] == "workbench" and alias.name != "workbench")
    return found


def test_extension_uses_only_exported_names() -> None:
    """The extension imports a library name only from a package or public module that exports it."""
    allowed = set(PACKAGES + PUBLIC_MODULES)
    wrong = []
    files = sorted((ROOT / "extensions").rglob("*.py"))
    assert files
    for path in files:
        for line, module_name, name in library_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module_name not in allowed:
                wrong.append(f"{where}: imports {name or module_name} from {module_name}, not a public package")
                continue
            if name and name not in importlib.import_module(module_name).__all__:
                wrong.append(f"{where}: {module_name} does not export {name}")
    assert not wrong, "\n".join(wrong)
