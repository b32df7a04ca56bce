"""``workbench lab``: start JupyterLab on the example notebooks.

The argv is built by :func:`lab_argv`, which the browser-test harness
(``workbench.testing.jupyter``) shares, so the command users run and the server the tests drive
are started the same way. Nothing here imports IPython, ipywidgets or JupyterLab: the library
stays importable without the Jupyter stack, and JupyterLab only runs in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from workbench.errors import ConfigurationError, ServiceError

DEFAULT_PORT = 8888
DEFAULT_IP = "127.0.0.1"

__all__ = ["DEFAULT_IP", "DEFAULT_PORT", "lab_argv", "default_notebook_dir", "add_arguments", "main"]


def _running_as_root() -> bool:
    # os.geteuid does not exist on Windows, where "root" is not a thing JupyterLab checks.
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def lab_argv(root_dir: str | os.PathLike[str], port: int | None = None, ip: str = DEFAULT_IP,
             open_browser: bool = False, token: str | None = None,
             extra: Iterable[str] = ()) -> list[str]:
    """The argv that runs JupyterLab serving ``root_dir``.

    ``token=None`` keeps Jupyter's default (a random token it prints); ``token=""`` disables
    authentication, which is only sensible on loopback (the test harness). Extra traitlets flags
    in ``extra`` come last so they win over the defaults set here.
    """
    # sys.executable -m jupyterlab runs the JupyterLab of *this* interpreter, whatever `jupyter`
    # happens to be first on PATH.
    argv = [sys.executable, "-m", "jupyterlab"]
    if _running_as_root():
        # Jupyter refuses to start as root without it (containers and CI run as root).
        argv.append("--allow-root")
    argv += [
        f"--ServerApp.ip={ip}",
        f"--ServerApp.root_dir={Path(root_dir).resolve()}",
        # No request to jupyter.org for news or release checks: offline machines, quiet tests,
        # and no notification toast covering the page.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if port is not None:
        # With an explicit port, moving to another one silently would make the URL we print (and
        # the readiness check of the harness) point at the wrong server: fail instead.
        argv += [f"--ServerApp.port={int(port)}", "--ServerApp.port_retries=0"]
    if token is not None:
        # IdentityProvider.token, not the ServerApp.token that Jupyter Server 2 warns is deprecated.
        argv.append(f"--IdentityProvider.token={token}")
    if not open_browser:
        argv.append("--no-browser")
    argv += list(extra)
    return argv


#: settings defaults of every Lab workbench starts: no news prompt and no update check, whose
#: toasts would cover the notebook (``--LabApp.news_url=None`` alone does not stop the prompt)
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def merge_settings(target: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``target`` key by key, nested dicts included; returns ``target``."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_settings(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value
    return target


def installed_app_settings_dir() -> Path | None:
    """``<app dir>/settings`` of this JupyterLab (where ``jupyter lab`` reads overrides.json)."""
    try:
        from jupyterlab.commands import get_app_dir
    except ImportError:
        return None
    return Path(get_app_dir()) / "settings"


def write_app_settings(target: Path, overrides: Mapping[str, Mapping[str, Any]] = LAB_SETTINGS) -> Path:
    """An app settings directory for ``--LabApp.app_settings_dir``: the installation's own (its
    page_config.json disabling extensions, its overrides) with ``overrides`` merged on top."""
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    merged: dict[str, Any] = {}
    installed = installed_app_settings_dir()
    if installed is not None and installed.is_dir() and installed.resolve() != target.resolve():
        for source in sorted(installed.iterdir()):
            if not source.is_file() or source.suffix not in (".json", ".json5"):
                continue
            if source.name == "overrides.json":
                merge_settings(merged, json.loads(source.read_text()))
            elif source.name == "overrides.json5":
                # Read after overrides.json by Lab, so it would beat ours: fold it in instead.
                import json5

                merge_settings(merged, json5.loads(source.read_text()))
            else:
                (target / source.name).write_bytes(source.read_bytes())
    elif (target / "overrides.json").is_file():
        merge_settings(merged, json.loads((target / "overrides.json").read_text()))
    merge_settings(merged, overrides)
    (target / "overrides.json").write_text(json.dumps(merged, indent=2))
    return target


def default_notebook_dir() -> Path:
    """The repository's ``notebooks/`` directory in a source checkout, else the current directory."""
    import workbench

    candidate = Path(workbench.__file__).resolve().parent.parent / "notebooks"
    return candidate if candidate.is_dir() else Path.cwd()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``workbench lab`` flags to ``parser``."""
    parser.add_argument("--notebook-dir", type=Path, default=None, metavar="DIR",
                        help="directory JupyterLab serves (default: the repository's notebooks/ "
                             "directory in a source checkout, else the current directory)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--ip", default=DEFAULT_IP,
                        help=f"address to listen on (default {DEFAULT_IP}: this machine only)")
    parser.add_argument("--browser", action=argparse.BooleanOptionalAction, default=False,
                        help="open a web browser on the Lab URL (default: --no-browser)")
    parser.add_argument("--stack", action=argparse.BooleanOptionalAction, default=True,
                        help="run the embedded stack (as `workbench up`) while the Lab runs, and point "
                             "the notebooks' extension at it (default: --stack)")
    from workbench import stack

    stack.add_arguments(parser)


def _check_port(ip: str, port: int) -> int:
    """The port to use: a free one for 0, else ``port`` after checking nothing listens there."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Mirror what Tornado does (SO_REUSEADDR), so a port in TIME_WAIT is not reported busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            raise ServiceError(f"cannot listen on {ip}:{port}: {exc.strerror or exc}; "
                               "choose another with --port (0 picks a free one)",
                               service="jupyterlab", address=f"{ip}:{port}") from exc
        return sock.getsockname()[1]


def main(args: argparse.Namespace) -> int:
    """Run JupyterLab in the foreground, serving ``--notebook-dir``.

    With ``--stack`` (the command's default) the embedded stack runs in this process and JupyterLab
    as its child, with ``WORKBENCH_STACK`` naming the stack file; the stack stops when the Lab does.
    Without it, on POSIX the process execs JupyterLab (so this returns only on errors, which raise);
    elsewhere it runs JupyterLab as a child and returns its exit code.
    """
    root_dir = Path(args.notebook_dir) if getattr(args, "notebook_dir", None) else default_notebook_dir()
    if not root_dir.is_dir():
        raise ConfigurationError(f"notebook directory {root_dir} does not exist", notebook_dir=str(root_dir))
    ip = getattr(args, "ip", DEFAULT_IP)
    port = _check_port(ip, getattr(args, "port", DEFAULT_PORT))
    # Our own token, so the URL printed below is the complete one to paste into a browser. It goes
    # through the environment (readable only by this user), not argv (which `ps` shows to all).
    token = secrets.token_hex(24)
    env = {**os.environ, "JUPYTER_TOKEN": token}
    from workbench.stack import default_state_dir

    # A settings directory of our own (the installation's, plus LAB_SETTINGS), so no news prompt
    # covers the notebooks, without writing into the installation that other Labs share.
    settings = write_app_settings(Path(getattr(args, "state_dir", None) or default_state_dir()).expanduser()
                                  / "lab-settings")
    argv = lab_argv(root_dir, port=port, ip=ip, open_browser=bool(getattr(args, "browser", False)),
                    extra=[f"--LabApp.app_settings_dir={settings}"])
    host = f"[{ip}]" if ":" in ip else ip
    if getattr(args, "stack", False):
        return _run_with_stack(args, argv, env, root_dir, f"http://{host}:{port}/lab?token={quote(token)}")
    print(f"JupyterLab serving {root_dir.resolve()}", flush=True)
    print(f"  http://{host}:{port}/lab?token={quote(token)}", flush=True)
    if os.name == "posix":
        # Become JupyterLab: Ctrl-C, SIGTERM and the exit code then behave exactly as Jupyter
        # defines them, and no parent can die and leave the server orphaned.
        # An ignored SIGINT survives exec (a shell's `&` ignores it): give Jupyter its default back,
        # so `kill -INT` stops it as Ctrl-C does.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            os.execve(argv[0], argv, env)
        except OSError as exc:
            raise ServiceError(f"cannot start JupyterLab: {exc}", service="jupyterlab") from exc
    # Windows has no real exec (os.execv spawns and exits): run it as a child instead.
    return _wait_for_lab(subprocess.Popen(argv, env=env))


def _wait_for_lab(process: subprocess.Popen) -> int:
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            # A terminal's Ctrl-C reached Jupyter too, a `kill -INT` of this process did not:
            # either way the user asked to stop, so Jupyter is told to (it then exits cleanly).
            process.terminate()


def _run_with_stack(args: argparse.Namespace, argv: list[str], env: dict[str, str], root_dir: Path,
                    url: str) -> int:
    """Start the embedded stack, run JupyterLab as a child pointed at it, stop the stack after."""
    from workbench.stack import ENVIRONMENT_VARIABLE, from_arguments, print_stack

    stack = from_arguments(args)
    print(f"starting the workbench stack in {stack.state_dir} ...", flush=True)
    stack.start()
    try:
        print_stack(stack.describe())
        env = {**env, ENVIRONMENT_VARIABLE: str(stack.stack_file)}
        print(f"JupyterLab serving {root_dir.resolve()}", flush=True)
        print(f"  {url}", flush=True)
        process = subprocess.Popen(argv, env=env)
        # SIGTERM and SIGINT (Ctrl-C, or `kill -INT` even when a shell started us ignoring it) end
        # JupyterLab first; the finally below then stops the stack (no orphans).
        stopping = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, lambda *_: process.terminate()) for sig in stopping}
        try:
            return _wait_for_lab(process)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        print("stopping the stack ...", flush=True)
        stack.stop()
