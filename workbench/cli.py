"""The ``workbench`` command: parses flags, then calls the library (no logic of its own).

Subsystems plug in by providing ``workbench/<name>/cli.py`` with ``add_arguments(parser)`` (which
sets ``func`` on the parser defaults); a group appears here as soon as its module exists.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
import threading
from typing import Sequence

import workbench
from workbench.errors import WorkbenchError

#: subcommand group -> (module providing it, one-line help)
SUBSYSTEM_GROUPS: dict[str, tuple[str, str]] = {
    "zdb": ("workbench.zdb.cli", "ZeroMQ document database: serve, replica, shell"),
    "domain": ("workbench.domain.cli", "management domain: agents, brokers, processes"),
    "commits": ("workbench.commits.cli", "versioned configuration: HTTP server and client"),
    "clusters": ("workbench.clusters.cli", "datastore clusters over SSH: create, list, show, destroy"),
    "inventory": ("workbench.inventory.cli", "data inventory: servers, applications, web modules"),
}


def available_groups() -> dict[str, tuple[str, str]]:
    """The subsystem groups whose CLI module is present in this installation."""
    found = {}
    for name, (module, help_text) in SUBSYSTEM_GROUPS.items():
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the subsystem package itself does not exist yet
            present = False
        if present:
            found[name] = (module, help_text)
    return found


def cmd_version(args: argparse.Namespace) -> int:
    print(f"workbench {workbench.__version__}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from workbench import lab

    return lab.main(args)


def cmd_up(args: argparse.Namespace) -> int:
    from workbench.stack import from_arguments, print_stack

    stack = from_arguments(args)
    print(f"starting the workbench stack in {stack.state_dir} ...", flush=True)
    stack.start()
    try:
        print_stack(stack.describe())
        print("ready; Ctrl-C stops everything", flush=True)
        stack.serve_until_signalled()
    except KeyboardInterrupt:
        pass  # Ctrl-C before the wait above took over the signal: the same request to stop
    finally:
        print("stopping ...", flush=True)
        stack.stop()
    print("stopped", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from workbench.stack import print_stack, stack_status

    status = stack_status(args.state_dir)
    if not status["running"]:
        print(f"no workbench stack runs on {status['state_dir']}")
        return 3
    print(f"workbench stack running (pid {status['pid']}) on {status['state_dir']}")
    print_stack(status)
    for label, answering in status["answering"].items():
        print(f"  {label:<20} {'answering' if answering else 'NOT ANSWERING'}")
    return 0 if all(status["answering"].values()) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="An interactive ops workbench: domain, zdb, commits, clusters and inventory.")
    parser.add_argument("--version", action="version", version=f"workbench {workbench.__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")

    version = subcommands.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    from workbench import lab

    lab_parser = subcommands.add_parser("lab", help="start JupyterLab on the example notebooks")
    lab.add_arguments(lab_parser)
    lab_parser.set_defaults(func=cmd_lab)

    from workbench import stack
    from workbench.stack import default_state_dir

    up = subcommands.add_parser("up", help="run the embedded stack (domain, zdb, commits, inventory, "
                                           "clusters) until Ctrl-C")
    stack.add_arguments(up)
    up.set_defaults(func=cmd_up)
    status = subcommands.add_parser("status", help="what the embedded stack runs and whether it answers")
    status.add_argument("--state-dir", default=default_state_dir(), help="the stack's state directory")
    status.set_defaults(func=cmd_status)

    for name, (module, help_text) in available_groups().items():
        group = subcommands.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(group)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # A shell's `cmd &` starts us with SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: `kill -INT` would do nothing. Every command stops on it instead.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A bare `workbench` or a bare group (`workbench zdb`): show the matching help.
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
