"""The ``workbench`` command: parses flags, then calls the library (no logic of its own).

Subsystems plug in by providing ``workbench/<name>/cli.py`` with ``add_arguments(parser)`` (which
sets ``func`` on the parser defaults); a group appears here as soon as its module exists.

Conventions every group gets from here, so no group repeats them: an option of a group also works
after its subcommand (``workbench clusters create x --db URL``); a subcommand added with
``help=argparse.SUPPRESS`` is left out of the help; and a reader that closes the pipe early
(``workbench commits log KEY | head -1``) ends the command quietly with status 141, the status of a
process that SIGPIPE ended, as ``git log | head`` gives (a pipeline under ``set -o pipefail`` sees
that the output was cut short).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import os
import select
import signal
import sys
import threading
from typing import Sequence

import workbench
from workbench.errors import WorkbenchError

#: the exit status of a command whose reader closed the pipe: 128 + SIGPIPE, what a shell shows for
#: a process SIGPIPE ended (Python ignores SIGPIPE, so we say it ourselves)
CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE

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
        share_options(group)
    hide_suppressed_commands(parser)
    return parser


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s subcommands (none when it has no subcommands)."""
    return [sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for sub in dict.fromkeys(action.choices.values())]  # an alias maps to its parser again


def share_options(parser: argparse.ArgumentParser) -> None:
    """Make each option of ``parser`` work after its subcommands too, recursively.

    Each subcommand gets a copy whose default is ``SUPPRESS``: given after the subcommand it
    overrides the value given before, and not given it leaves that value alone (argparse copies only
    the attributes a subparser set). A subcommand's own option of the same name keeps its meaning.
    """
    shared = [action for action in parser._actions
              if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))]
    for sub in _subcommand_parsers(parser):
        free = [action for action in shared
                if not any(flag in sub._option_string_actions for flag in action.option_strings)]
        if free:
            section = sub.add_argument_group(f"options of {parser.prog} (also accepted before the command)")
            for action in free:
                duplicate = copy.copy(action)
                duplicate.default, duplicate.required = argparse.SUPPRESS, False
                section._add_action(duplicate)
        share_options(sub)


def hide_suppressed_commands(parser: argparse.ArgumentParser) -> None:
    """Leave out of every help the subcommands added with ``help=SUPPRESS``, which Python 3.11's
    argparse lists as ``==SUPPRESS==``; they still run."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action._choices_actions = [choice for choice in action._choices_actions
                                       if choice.help is not argparse.SUPPRESS]
    for sub in _subcommand_parsers(parser):
        hide_suppressed_commands(sub)


def _stdout_closed() -> bool:
    """Whether our standard output is a pipe its reader closed (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or no real stdout: cannot tell
        return False


def _quiet_closed_pipe() -> int:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    os.close(devnull)
    return CLOSED_PIPE_STATUS


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
        status = int(func(args) or 0)
        # Output still buffered meets a closed pipe here, not in the interpreter's last flush
        # (which would print "Exception ignored ... BrokenPipeError" and exit 120).
        sys.stdout.flush()
        return status
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Only our own output's reader going away is the quiet case; a broken socket inside a
        # command is an error like any other.
        if not _stdout_closed():
            raise
        return _quiet_closed_pipe()


if __name__ == "__main__":
    sys.exit(main())
