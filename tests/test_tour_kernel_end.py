"""The stack a notebook started with ``use_stack()`` stops when its kernel shuts down.

The tour's last cell leaves its live dashboard on screen, so it no longer stops the stack itself:
the kernel's end does (``EmbeddedStack`` registers ``atexit``), as JupyterLab's "Shut Down Kernel"
and nbconvert end a kernel, with a shutdown request.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

from workbench.testing.process import processes_mentioning

ROOT = Path(__file__).resolve().parents[1]


def test_a_stack_started_in_a_kernel_stops_when_the_kernel_shuts_down(tmp_path):
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
        assert Path(state_dir, "stack.json").exists() and processes_mentioning(state_dir), state_dir
    finally:
        client.stop_channels()
        manager.shutdown_kernel()  # a shutdown request, as JupyterLab sends
    deadline = time.monotonic() + 60
    while processes_mentioning(state_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(state_dir) == {}
    assert not Path(state_dir, "stack.json").exists()
    shutil.rmtree(state_dir, ignore_errors=True)  # use_stack's temporary directory
