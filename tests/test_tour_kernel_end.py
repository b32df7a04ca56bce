"""The stack a notebook started with ``use_stack()`` stops when its kernel ends, however it ends.

The tour's last cell leaves its live dashboard on screen, so it no longer stops the stack itself:
the kernel's end does. A shutdown request (JupyterLab's "Shut Down Kernel", nbconvert) runs
``EmbeddedStack``'s ``atexit``; a kill (nbval, a kernel manager's "now") runs nothing in the kernel,
and the stack's watchdog stops what its agent started.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from workbench.testing.process import processes_mentioning

ROOT = Path(__file__).resolve().parents[1]


def start_a_stack_in_a_kernel_and_end_it(tmp_path: Path, now: bool) -> str:
    """The state directory of the stack ``use_stack()`` started in a kernel ended with ``now``."""
    env = {key: value for key, value in os.environ.items() if key != "WORKBENCH_STACK"}
    env["WORKBENCH_STATE_DIR"] = str(tmp_path / "no-stack")  # nothing runs there: use_stack starts one
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "extensions"), env.get("PYTHONPATH", "")])
    manager, client = start_new_kernel(kernel_name="python3", env=env)
    printed: list[str] = []
    try:
        reply = client.execute_interactive(
            "from workbench.stack import use_stack\nstack = use_stack()\nprint(stack.state_dir)", timeout=180,
            output_hook=lambda message: printed.append(message["content"].get("text", "")))
        assert reply["content"]["status"] == "ok", reply["content"]
        state_dir = "".join(printed).strip()
        assert Path(state_dir, "stack.json").exists()
        assert len(processes_mentioning(state_dir)) >= 2, state_dir  # its storage manager and engine
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=now)  # now: SIGKILL; else a shutdown request, as JupyterLab sends
    deadline = time.monotonic() + 60
    while processes_mentioning(state_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    return state_dir


@pytest.mark.parametrize("now", [False, True], ids=["shut-down", "killed"])
def test_a_stack_started_in_a_kernel_stops_when_the_kernel_ends(tmp_path, now):
    state_dir = start_a_stack_in_a_kernel_and_end_it(tmp_path, now)
    assert processes_mentioning(state_dir) == {}
    assert not Path(state_dir, "stack.json").exists()
    if now:  # the watchdog removes the temporary directory too
        deadline = time.monotonic() + 30
        while Path(state_dir).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(state_dir).exists()
    shutil.rmtree(state_dir, ignore_errors=True)  # use_stack's temporary directory
