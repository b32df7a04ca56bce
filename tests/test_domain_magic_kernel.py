"""%domain in a real IPython kernel, no browser: the password is asked through the front end's stdin
channel (a masked input) and appears in no message the kernel sends, nor in its history.

The test is the front end: it answers the kernel's ``input_request`` through jupyter_client and
reads every IOPub message, as JupyterLab would receive them.
"""

from __future__ import annotations

import json
import queue

import pytest
from jupyter_client.manager import start_new_kernel

from test_domain_magic import PASSWORD, domain_broker  # noqa: F401 - a fixture


@pytest.fixture
def kernel(domain_broker):
    """A kernel started after the broker, so it inherits the per-test known-brokers file."""
    manager, client = start_new_kernel(kernel_name="python3")
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


class FrontEnd:
    """Runs cells, answers password prompts, and keeps every message the kernel sent."""

    def __init__(self, client) -> None:
        self.client = client
        self.messages: list[dict] = []
        self.prompts: list[dict] = []

    def run(self, code: str, password: str | None = None, timeout: float = 60) -> dict:
        msg_id = self.client.execute(code, allow_stdin=password is not None)
        if password is not None:
            request = self.client.get_stdin_msg(timeout=timeout)
            self.messages.append(request)
            self.prompts.append(request["content"])
            self.client.input(password)
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            self.messages.append(msg)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                    and msg["content"]["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=timeout)
        self.messages.append(reply)
        return reply["content"]

    def drain(self, seconds: float = 1.0) -> None:
        """Collect what a render thread sends after a cell went idle."""
        try:
            while True:
                self.messages.append(self.client.get_iopub_msg(timeout=seconds))
        except queue.Empty:
            pass

    def outputs(self, kind: str) -> str:
        return "".join(m["content"].get("text", "") for m in self.messages
                       if m["msg_type"] == "stream" and m["content"].get("name") == kind)


def test_the_password_is_asked_masked_and_never_leaves_the_kernel(kernel, domain_broker, tmp_path):
    front = FrontEnd(kernel)
    assert front.run(f"address = {domain_broker.address!r}\n%load_ext workbench")["status"] == "ok"
    reply = front.run("%domain connect {address} domain", password=PASSWORD)
    assert reply["status"] == "ok", reply
    assert front.prompts == [{"prompt": f"password of domain on {domain_broker.address}: ", "password": True}]
    assert f"connected to {domain_broker.address} as domain" in front.outputs("stdout")

    archive = tmp_path / "teas"
    code = (f"sm = %domain start sm teas --archive {archive} --init\n"
            "te = %domain start te teas\n"
            "dash = %domain\n"
            "display(dash)\n"
            "assert dash.wait_for(lambda d: len(d.processes) == 2, 30) and dash.flush()\n"
            "%domain processes")
    assert front.run(code)["status"] == "ok"
    front.drain()
    # Everything a user may look at afterwards: the history of inputs and outputs, %workbench.
    history = "import json\nprint(json.dumps([_ih, {k: repr(v) for k, v in Out.items()}]))\n%workbench"
    assert front.run(history)["status"] == "ok"

    wire = json.dumps(front.messages, default=str)
    widget_values = [m["content"]["data"]["state"].get("value", "") for m in front.messages
                     if m["msg_type"] in ("comm_open", "comm_msg") and "state" in m["content"].get("data", {})]
    assert any("RUNNING" in str(v) and "teas" in str(v) for v in widget_values)  # the dashboard did render
    assert "domain@" + domain_broker.address in wire and "(TE)" in wire
    assert PASSWORD not in wire

    # A wrong password typed at the prompt is a short error, and is not echoed either.
    front.run("%domain connect {address} domain --name other", password="wrong-" + PASSWORD)
    stderr = front.outputs("stderr") + json.dumps([m["content"] for m in front.messages
                                                   if m["msg_type"] == "error"])
    assert f"wrong domain user or password for domain@{domain_broker.address}" in stderr
    assert PASSWORD not in json.dumps(front.messages, default=str)
    front.run("%unload_ext workbench")
