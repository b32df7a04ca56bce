"""zdb pipelines: many ops queued on the client, sent in one ``batch`` request, results in order.

::

    with db.pipeline() as p:
        p["counters"]["hits"] = 0          # a write
        p["log"].append("started")         # a method call
        p["config"]["name"]._run()         # a read of a path
    p.results                              # [None, None, "teas"]

As redis-py's pipeline: nothing is sent until ``execute()`` (or the end of the ``with`` block,
which executes what is queued; redis-py's only resets), and ``execute`` returns one result per
op in the order they were queued. The ops are not one transaction: each runs on its own, in
order, and sees the ones before it. An op that fails does not stop the others; with
``raise_on_error`` (the default) ``execute`` raises the first failure once all have run, else
the failures take their ops' places in the results as exception objects. The batch's writes
are one journal append and one fsync on the server, so 100 pipelined writes cost about one.
A block left by an exception sends nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.zdb.errors import ZDB_ERRORS

if TYPE_CHECKING:
    from workbench.zdb.client import Client


class Pipeline:
    """Ops queued for one request; ``p[key]...`` builds them as a ``Proxy`` would run them."""

    def __init__(self, client: "Client", raise_on_error: bool = True) -> None:
        self.client = client
        self.raise_on_error = raise_on_error
        self.results: list[Any] | None = None  # what the last execute() returned
        self._ops: list[list[Any]] = []

    def __repr__(self) -> str:
        return f"<zdb Pipeline of {len(self._ops)} queued op(s) on {self.client.write_uri}>"

    def __len__(self) -> int:
        return len(self._ops)

    # -- queueing ---------------------------------------------------------------------------------
    def queue(self, path: tuple[Any, ...], method: str | None = None, args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> "Pipeline":
        """Queue one op (``method`` None reads the value at ``path``); returns the pipeline, for chaining."""
        # Checked now, as Client.run checks it: an unstorable value fails where it is written.
        self._ops.append(self.client.op(path, method, args, kwargs))
        return self

    def __getitem__(self, key: Any) -> "QueuedPath":
        return QueuedPath(self, (key,))

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, QueuedPath) and value._path == (key,):
            return  # `p[k] += ...` assigns the path back onto itself: the extend is queued already
        self.queue((), "__setitem__", (key, value))

    def __delitem__(self, key: Any) -> None:
        self.queue((), "__delitem__", (key,))

    # -- sending ----------------------------------------------------------------------------------
    def execute(self, raise_on_error: bool | None = None) -> list[Any]:
        """Send the queued ops in one request; their results in order (the queue is emptied)."""
        ops, self._ops = self._ops, []
        if not ops:
            self.results = []
            return self.results
        slots, _ = self.client.request("batch", ops=ops)
        results = [ZDB_ERRORS.error(slot["error"]) if "error" in slot else slot.get("result") for slot in slots]
        self.results = results
        if self.raise_on_error if raise_on_error is None else raise_on_error:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    def reset(self) -> None:
        """Drop the queued ops unsent."""
        self._ops = []

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is None:
            self.execute()
        else:
            self.reset()


class QueuedPath:
    """A path inside a pipeline: writes, method calls and ``_run()`` reads queue ops on it."""

    __slots__ = ("_pipeline", "_path")

    def __init__(self, pipeline: Pipeline, path: tuple[Any, ...]) -> None:
        object.__setattr__(self, "_pipeline", pipeline)
        object.__setattr__(self, "_path", path)

    def __getitem__(self, key: Any) -> "QueuedPath":
        return QueuedPath(self._pipeline, (*self._path, key))

    def _run(self) -> Pipeline:
        """Queue a read of the value at this path (as ``Proxy._run`` reads it)."""
        return self._pipeline.queue(self._path)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, QueuedPath) and value._path == (*self._path, key):
            return  # `p[k] += ...` assigns the path back onto itself: the extend is queued already
        self._pipeline.queue(self._path, "__setitem__", (key, value))

    def __delitem__(self, key: Any) -> None:
        self._pipeline.queue(self._path, "__delitem__", (key,))

    def __iadd__(self, other: Any) -> "QueuedPath":
        self._pipeline.queue(self._path, "extend", (other,))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("zdb paths are built with [], not attributes")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # as Proxy: underscore names are never remote
            raise AttributeError(name)
        pipeline, path = self._pipeline, self._path
        return lambda *args, **kwargs: pipeline.queue(path, name, args, kwargs)

    def __repr__(self) -> str:
        return f"<zdb queued path db{''.join(f'[{k!r}]' for k in self._path)}>"
