"""The zdb REPL: each line is Python against ``db``; a line that evaluates to a proxy is read and printed.

A line that fails prints one line, ``ErrorName: message``, as the ``%zdb`` magic does, and the shell
goes on: the traceback would only show the shell's own frame.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from workbench.zdb.client import Proxy, client


def evaluate(line: str, namespace: dict[str, Any]) -> Any:
    """Run one line as the seed's shell did: an expression's value (read if it is a path), else exec."""
    try:
        code = compile(line, "<zdb>", "eval")
    except SyntaxError:
        exec(compile(line, "<zdb>", "exec"), namespace)
        return None
    result = eval(code, namespace)
    return result._run() if isinstance(result, Proxy) else result


def run_shell(write_uri: str, read_uri: str | None = None, stdin: TextIO = sys.stdin,
              stdout: TextIO = sys.stdout, **options: Any) -> int:
    db, connection = client(write_uri, read_uri, **options)
    namespace: dict[str, Any] = {"db": db, "connection": connection}
    interactive = stdin.isatty()
    try:
        while True:
            if interactive:
                stdout.write("> ")
                stdout.flush()
            line = stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                print(repr(evaluate(line, namespace)), file=stdout)
            except Exception as exc:  # noqa: BLE001 - a shell reports the error and goes on
                print(f"{type(exc).__name__}: {exc}", file=stdout)
            stdout.flush()
    finally:
        connection.close()
    return 0
