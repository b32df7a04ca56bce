"""Every public object prints readably: no ``<... object at 0x...>`` in a notebook or a log, and no secret."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import inspect
import re
import socket
from typing import Any, Iterator, Protocol

import pytest

#: the packages whose ``__all__`` is the public API
PACKAGES = ["workbench", "workbench.errors", "workbench.events", "workbench.stack", "workbench.credentials",
            "workbench.ports", "workbench.zdb", "workbench.domain", "workbench.commits", "workbench.clusters",
            "workbench.inventory", "workbench_jupyter"]
DEFAULT_REPR = re.compile(r" object at 0x[0-9a-f]+>$")


def public_classes() -> Iterator[tuple[str, type]]:
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if inspect.isclass(value):
                yield f"{package}.{name}", value


def shows_itself(cls: type) -> bool:
    """Whether instances of ``cls`` get a repr of their own (or need none: a Protocol has no instances)."""
    if issubclass(cls, (BaseException, enum.Enum)) or Protocol in cls.__mro__[1:] and cls.__dict__.get("_is_protocol"):
        return True
    if dataclasses.is_dataclass(cls) and cls.__dataclass_params__.repr:  # type: ignore[attr-defined]
        return True
    return any("__repr__" in klass.__dict__ for klass in cls.__mro__[:-1])


def test_every_public_class_has_its_own_repr():
    classes = dict(public_classes())
    assert len(classes) > 50  # the walk found the API
    assert [name for name, cls in classes.items() if not shows_itself(cls)] == []


@pytest.fixture
def made(tmp_path: Any) -> Iterator[dict[str, Any]]:
    """Public objects made without a server (name -> instance), closed afterwards."""
    from workbench.clusters import Backup, ClusterStore, ClustersClient, Task, TaskRunner
    from workbench.clusters.settings import Settings
    from workbench.commits import (JSON, BasicAuth, CommitServer, MemoryCommitStorage, RainerClient,
                                   SqlCommitStorage, TokenAuth)
    from workbench.events import EventDispatcher, EventRecorder
    from workbench.inventory import InventoryClient
    from workbench.stack import EmbeddedStack
    from workbench.zdb import Client

    with contextlib.ExitStack() as closing:
        store = closing.enter_context(ClusterStore("sqlite://", Settings.load(None, state_dir=str(tmp_path))))
        storage = closing.enter_context(MemoryCommitStorage())
        instances = {
            "Backup": Backup(name="web-20260101", cluster_name="web", size=42, status="done"),
            "Task": Task(name="create_cluster", cluster_name="web", status="running", progress=40),
            "ClusterStore": store,
            "TaskRunner": closing.enter_context(TaskRunner(store)),
            "ClustersClient": ClustersClient("http://127.0.0.1:9/api", "s3cret-token"),
            "EventDispatcher": EventDispatcher("demo"),
            "EventRecorder": EventRecorder(),
            "MemoryCommitStorage": storage,
            "SqlCommitStorage": SqlCommitStorage("postgresql+psycopg://ann:s3cret-pw@127.0.0.1:9/db", table="t"),
            "CommitServer": CommitServer(storage, port=8080, prefix="/diary"),
            "RainerClient": RainerClient("http://127.0.0.1:9/diary", token="s3cret-token"),
            "TokenAuth": TokenAuth("s3cret-token"),
            "BasicAuth": BasicAuth({"ann": "s3cret-pw"}),
            "JSON": JSON,
            "EmbeddedStack": EmbeddedStack(tmp_path / "stack"),
            "Client": Client("tcp://127.0.0.1:9"),
        }
        # a listening socket is enough for the client to connect (nobody answers: nothing is asked)
        listener = closing.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        listener.bind(str(tmp_path / "inventory.sock"))
        listener.listen()
        instances["InventoryClient"] = closing.enter_context(InventoryClient(str(tmp_path / "inventory.sock")))
        closing.callback(instances["Client"].close)
        closing.callback(instances["EventDispatcher"].close)
        yield instances


def test_cheap_instances_print_what_they_are_and_no_secret(made):
    shown = {name: repr(value) for name, value in made.items()}
    for name, text in shown.items():
        assert not DEFAULT_REPR.search(text), (name, text)
        assert "s3cret" not in text, (name, text)
    assert shown["Backup"] == "<Backup: web-20260101 of web, done, 42 bytes>"
    assert shown["Task"] == "<Task: create_cluster on web, running 40%>"
    assert shown["ClustersClient"] == "<ClustersClient http://127.0.0.1:9/api>"
    assert shown["SqlCommitStorage"] == "<SqlCommitStorage postgresql+psycopg://ann:***@127.0.0.1:9/db table t>"
    assert shown["CommitServer"] == "<CommitServer http://127.0.0.1:8080/diary>"
    assert shown["RainerClient"] == "<RainerClient http://127.0.0.1:9/diary>"
    assert shown["BasicAuth"] == "<BasicAuth: ann>" and shown["TokenAuth"] == "<TokenAuth>"
    assert shown["JSON"] == "<json serialization>"
    assert shown["Client"] == "<zdb Client tcp://127.0.0.1:9>"
    assert shown["EventDispatcher"] == "<EventDispatcher 'demo': 0 listener(s)>"
    assert shown["ClusterStore"] == "<ClusterStore sqlite://>"
    assert shown["InventoryClient"] == f"<InventoryClient {made['InventoryClient'].address}>"
    assert shown["InventoryClient"].endswith("inventory.sock>")
    for name in ("MemoryCommitStorage", "EmbeddedStack", "TaskRunner", "EventRecorder"):
        assert shown[name].startswith(f"<{name}"), shown[name]
