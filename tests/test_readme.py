"""The README is a test: every code block runs as a newcomer types it, or is marked as not run.

Python blocks run as written, as a file in an empty directory, after the server their ``# after:``
comment names is started with the real CLI on the port the block uses. Bash blocks are typed line by
line into one shell with the venv's ``workbench`` on PATH; a line ending in ``&`` is a server, and the
next line waits for its first output as a reader would. Blocks that other tests run, or that are not
meant to run, say so in a marker (see ``workbench.testing.readme``).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.testing.process import processes_mentioning
from workbench.testing.readme import README, Block, code_blocks, parse

ROOT = README.parent
#: ``# after: COMMAND (port N)``: the server a Python block expects
AFTER = re.compile(r"#\s*after:\s*(?P<command>.+?)\s*\(port (?P<port>\d+)\)")
#: ports a block talks to, by how README blocks write them
PORT = re.compile(r"(?:\(port |localhost:|127\.0\.0\.1:)(\d{2,5})\b")
DONE = "__readme_line_done__"
TIMEOUT = 180.0

BLOCKS = code_blocks()
RUN_HERE = [block for block in BLOCKS if not block.marker]


def block_id(block: Block) -> str:
    return f"line{block.line}-{block.lang or 'text'}"


# -- every block is run somewhere, or says why not ---------------------------------------------------
def unaccounted(blocks: list[Block]) -> list[str]:
    """What is wrong with blocks that no test would run, one message each."""
    problems = []
    for block in blocks:
        where = f"README.md line {block.line}"
        if block.not_run is not None:
            if len(block.not_run) < 10:
                problems.append(f"{where}: say why it is not run")
        elif block.run_by is not None:
            test = ROOT / block.run_by
            if not test.is_file():
                problems.append(f"{where}: {block.run_by} does not exist")
            elif "run_by(__file__)" not in test.read_text():
                problems.append(f"{where}: {block.run_by} never reads its blocks")
        elif block.marker:
            problems.append(f"{where}: unknown marker {block.marker!r}")
        elif block.lang not in ("python", "bash"):
            problems.append(f"{where}: a {block.lang or 'plain'} block: mark it `<!-- run by: TEST -->` "
                            "or `<!-- not run: WHY -->`")
    return problems


def test_every_block_is_run_by_a_test_or_marked_with_a_reason():
    assert len(BLOCKS) >= 10, "the README's blocks were not found"
    assert unaccounted(BLOCKS) == []


def test_a_block_that_slips_in_untested_is_named():
    blocks = parse("<!-- not run: too long to run here -->\n```\nok\n```\n```\n%magic\n```\n"
                   "<!-- not run: -->\n```bash\nls\n```\n<!-- run by: tests/nowhere.py -->\n```python\npass\n```\n"
                   "<!-- run by: tests/test_packaging.py -->\n```bash\ntrue\n```\n<!-- maybe -->\n```bash\nls\n```\n")
    assert unaccounted(blocks) == [
        "README.md line 6: a plain block: mark it `<!-- run by: TEST -->` or `<!-- not run: WHY -->`",
        "README.md line 10: say why it is not run",
        "README.md line 14: tests/nowhere.py does not exist",
        "README.md line 18: tests/test_packaging.py never reads its blocks",
        "README.md line 22: unknown marker 'maybe'"]


def test_the_markers_are_found_where_the_readme_puts_them():
    markers = {block.text.splitlines()[0]: block.marker for block in BLOCKS if block.marker}
    assert markers["scripts/lab"].startswith("not run: ") and markers["scripts/test"].startswith("not run: ")
    assert markers["%load_ext workbench"] == "run by: tests/test_readme_magics.py"
    # the library's four Python examples and the clusters and inventory sessions, at least
    assert [block.lang for block in RUN_HERE].count("python") >= 4 and [b.lang for b in RUN_HERE].count("bash") >= 2


# -- running them -------------------------------------------------------------------------------------
def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def require_free(block: Block) -> None:
    """The fixed ports (and the inventory's default socket) a block uses must be free: fail clearly."""
    for port in sorted({int(p) for p in PORT.findall(block.text)}):
        if port_answers(port):
            pytest.fail(f"README.md line {block.line} uses port {port}, which something else listens on: "
                        "free it to run this test")
    if "/tmp/workbench-inventory.sock" in block.text and os.path.exists("/tmp/workbench-inventory.sock"):
        pytest.fail(f"README.md line {block.line} serves /tmp/workbench-inventory.sock, which exists: remove it")


@pytest.fixture
def newcomer(tmp_path):
    """(an empty working directory, the environment of a shell there): the venv's bin first on PATH, the
    home and WORKBENCH_STATE_DIR in temp dirs."""
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "WORKBENCH_STATE_DIR": str(tmp_path / "state"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("WORKBENCH_STACK", None)
    yield cwd, env
    for pid in processes_mentioning(str(tmp_path)):  # a server that outlived its stop
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (the shell and what it started), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def start_server(command: str, port: int, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """The server an ``# after:`` comment names, as typed in a shell; returns once its port answers."""
    log = open(cwd.parent / "server.log", "w")
    process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not port_answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"`{command}` did not serve port {port}:\n{(cwd.parent / 'server.log').read_text()}")
        time.sleep(0.1)
    return process


def run_python(block: Block, cwd: Path, env: dict[str, str]) -> str:
    after = AFTER.search(block.text)
    server = start_server(after["command"], int(after["port"]), cwd, env) if after else None
    try:
        script = cwd.parent / "block.py"
        script.write_text(block.text)
        done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode == 0, f"README.md line {block.line}:\n{done.stdout}\n{done.stderr}"
        return done.stdout
    finally:
        if server is not None:
            stop(server)


class Shell:
    """One bash, typed into a line at a time; each line's output and exit status."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(["bash", "--norc", "--noprofile"], cwd=cwd, env=env, text=True, bufsize=1,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)

        # one thread reads the shell's output, so a line can be waited for with a timeout
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for text in self.process.stdout:
            self.lines.put(text)
        self.lines.put("")

    def readline(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout:.0f} s") from None

    def type(self, line: str) -> tuple[int, str]:
        self.process.stdin.write(f"{line}\nprintf '\\n{DONE} %d\\n' $?\n")
        self.process.stdin.flush()
        output: list[str] = []
        while True:
            text = self.readline(TIMEOUT)
            if not text:
                raise AssertionError(f"the shell ended at `{line}`:\n{''.join(output)}")
            if text.startswith(DONE):
                return int(text.split()[1]), "".join(output).rstrip("\n")
            output.append(text)

    def close(self) -> None:
        stop(self.process)


def run_bash(block: Block, cwd: Path, env: dict[str, str]) -> list[str]:
    shell = Shell(cwd, env)
    outputs = []
    try:
        for line in block.lines():
            code, output = shell.type(line)
            assert code == 0, f"README.md line {block.line}: `{line}` exited {code}:\n{output}"
            if re.search(r"&\s*(#.*)?$", line):  # a server in the background: its first line says it is up
                output = shell.readline(60)
            outputs.append(output)
    finally:
        shell.close()
    return outputs


#: what each block's run must show, beyond running without an error (by its first line)
EXPECTED = {
    "from workbench.commits import": lambda out: '+{"max":20}' in out,
    "from workbench.events import": lambda out: out.startswith("joined: localhost:50450"),
    "workbench clusters create": lambda out: out.count("replica") >= 4 and "destroyed" in out,
    "echo 'from workbench.inventory": lambda out: "every block adds up" in out and '"result": "OK"' in out,
}


@pytest.mark.parametrize("block", RUN_HERE, ids=block_id)
def test_the_block_runs_as_written(block, newcomer):
    cwd, env = newcomer
    require_free(block)
    if block.lang == "python":
        out = run_python(block, cwd, env)
    else:
        out = "\n".join(run_bash(block, cwd, env))
    for start, shows in EXPECTED.items():
        if block.lines()[0].startswith(start):
            assert shows(out), f"README.md line {block.line} showed:\n{out}"
