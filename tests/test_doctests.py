"""The examples in docstrings run: every module of workbench and of the Jupyter extension, by doctest."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import workbench
import workbench_jupyter

PACKAGES = (workbench, workbench_jupyter)
#: every module but the ``__main__`` ones, which run their command when imported
MODULES = sorted({info.name for package in PACKAGES
                  for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
                  if not info.name.endswith(".__main__")} | {package.__name__ for package in PACKAGES})


def test_the_modules_are_found():
    assert {"workbench.events", "workbench.zdb.document", "workbench_jupyter.sessions"} <= set(MODULES)
    import workbench.events

    assert sum(len(test.examples) for test in doctest.DocTestFinder().find(workbench.events)) >= 3


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name):
    module = importlib.import_module(name)
    # a module's tests include those of the objects it imports only if they are its own
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples of {name} failed (output above)"
