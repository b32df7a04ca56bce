"""``SubsystemMagic``: what every subsystem's magic family shares (sessions, redaction, ``NAME <<``, dispatch).

A family (``%domain``, ``%zdb``, ``%commits``, ``%inventory``, ``%clusters``) is one ``Magics, Configurable``
subclass registered in ``shell.configurables`` (so ``%config ClassName.option`` works). It names itself
(``family``), gives its command table and keeps only its commands and how it opens a session; the base
keeps the sessions (``self.sessions``, a ``Sessions``), closes them on unload and does the rest::

    @magics_class
    class ThingMagic(SubsystemMagic):
        family = "thing"
        usage = "%thing connect URL | show NAME | disconnect [NAME] | VAR << COMMAND"
        connect_hint = "%thing connect URL first"

        def commands(self):
            return {"connect": (None, self.cmd_connect), "show": (_show_arguments, self.cmd_show),
                    "disconnect": (None, lambda name: self.disconnect(name or None))}

        def cmd_connect(self, url):
            self.sessions.check_name("thing")
            self.sessions.add("thing", ThingClient(url))       # current now, and listed in %workbench

        def cmd_show(self, parsed):
            return self.sessions.require().show(parsed.name)   # the current session, or "not connected"

        @line_magic("thing")
        def thing(self, line):
            return self.guarded(line, lambda: self.run_line(line))
"""

from __future__ import annotations

import functools
import re
import shlex
from typing import Any, Callable, Iterable, Mapping, MutableMapping

from IPython.core.error import UsageError
from IPython.core.magic import Magics
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets.config import Configurable

from workbench_jupyter.sessions import Sessions

#: ``NAME << COMMAND``: keep the command's result in the user variable NAME instead of showing it
CAPTURE = re.compile(r"\s*([A-Za-z_]\w*)\s*<<(?!<)(.*)\Z", re.S)
#: ``scheme://user:password@`` in a URL (the password may hold anything but whitespace and ``@``)
_URL_PASSWORD = re.compile(r"(\b[a-z][\w+.-]*://[^\s:/@]*):([^\s@]*)@", re.I)
#: ``--password VALUE``, ``--db-password=VALUE``, ``--secret VALUE``, ``--token VALUE``
_PASSWORD_OPTION = re.compile(r"(--[\w-]*(?:password|passwd|secret|token)[\w-]*(?:\s+|=))(['\"]?)([^\s'\"]+)\2",
                              re.I)

#: what a handler gets: the parsed arguments (``None`` when the command has no parser, then the raw text)
Parser = Callable[..., Any] | None
Handler = Callable[..., Any]
CommandTable = Mapping[str, tuple[Parser, Handler]]

def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, password options and every known secret replaced by ``***``.

    >>> redact("cannot reach postgresql://u:hunter2@db:5432/x --password s3cret", ("other",))
    'cannot reach postgresql://u:***@db:5432/x --password ***'
    """
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _PASSWORD_OPTION.sub(lambda m: f"{m.group(1)}{m.group(2)}***{m.group(2)}", text)
    # longest first: a secret that contains another must not be left half shown
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def secrets_in(text: str) -> tuple[str, ...]:
    """The passwords written in a line: of URLs and of password options (so messages never echo them)."""
    found = [m.group(2) for m in _URL_PASSWORD.finditer(text)]
    found += [m.group(3) for m in _PASSWORD_OPTION.finditer(text)]
    return tuple(s for s in found if s and s != "***")


def split_capture(line: str) -> tuple[str | None, str]:
    """``("out", " show x")`` for ``"out << show x"``; ``(None, line)`` when the line keeps nothing."""
    if match := CAPTURE.match(line):
        return match.group(1), match.group(2)
    return None, line


def capture_words(words: list[str]) -> list[str]:
    """The words after ``VAR <<`` (completion sees ``["out", "<<", "show"]`` or ``["out<<", "show"]``)."""
    if len(words) > 1 and words[1] == "<<" and CAPTURE.match(" ".join(words[:2])):
        return words[2:]
    if words and CAPTURE.match(words[0]) and "<<" in words[0]:
        tail = words[0].split("<<", 1)[1]
        return ([tail] if tail else []) + words[1:]
    return words


@functools.cache
def disconnect_arguments(family: str) -> Callable[[str], None]:
    """The parser of ``%family disconnect [NAME]`` (one per family: its name is in the help)."""
    @magic_arguments(name=f"{family} disconnect")
    @argument("name", nargs="?", help="connection to close (default: the current one)")
    def parser(line: str) -> None:
        """Close a connection."""
    return parser


class SubsystemMagic(Magics, Configurable):
    """Base of a subsystem's magics: its sessions, one redaction, ``NAME <<``, a command table, completion hooks."""

    #: the magic's name and the prefix of its messages ("clusters" -> "clusters: ...", "%clusters")
    family: str = ""
    #: the one-line usage shown with an unknown command
    usage: str = ""
    #: what "not connected" tells to do ("%zdb connect URI first")
    connect_hint: str = ""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        # made before the configurables' init: options given by %config fire observers there
        self.sessions = Sessions(self.family, self.connect_hint, value=self.bound, variable=self._user_variable)
        super().__init__(shell=shell, **kwargs)
        #: asks for a password (the kernel's getpass by default, which front ends show as a
        #: masked input); replaceable for front ends without one, and by tests
        self.password_prompt: Callable[[str], str] | None = None

    # -- sessions ---------------------------------------------------------------------------------
    def bound(self, session: Any) -> Any:
        """What the user variable ``variable`` holds while ``session`` is current (None: nothing)."""
        return None

    def _user_variable(self) -> tuple[MutableMapping[str, Any], str] | None:
        name = getattr(self, "variable", "")  # a family with a variable has it as a %config option
        return (self.shell.user_ns, name) if name and self.shell is not None else None

    def disconnect(self, name: str | None) -> None:
        """``%family disconnect [NAME]``: close the named (or current) session."""
        print(f"disconnected {self.sessions.close(name)!r}")

    def close(self) -> None:
        """Close every session (with its dashboards) and forget the tab completion (on unload)."""
        self.sessions.close_all()
        self.remove_completers()

    # -- redaction ------------------------------------------------------------------------------
    def secrets(self) -> tuple[str, ...]:
        """Passwords this family holds (of its sessions, of its options); never shown in a message."""
        return ()

    def line_secrets(self, line: str) -> tuple[str, ...]:
        """Passwords written in a line of this magic; a family with its own syntax adds to these."""
        return secrets_in(line)

    def redact(self, text: str, line: str = "") -> str:
        return redact(text, self.secrets() + self.line_secrets(line))

    def guarded(self, line: str, run: Callable[[], Any]) -> Any:
        """``run()``; a UsageError it raises is re-raised short and without any password."""
        # read before running: a failed connect forgets its session, and with it its password
        secrets = self.secrets() + self.line_secrets(line)
        try:
            return run()
        except UsageError as exc:
            raise UsageError(redact(str(exc), secrets + self.secrets())) from None

    def ask_password(self, prompt: str) -> str:
        """A password typed at a masked prompt; a short UsageError when none is given or none can be asked."""
        import getpass

        from IPython.core.error import StdinNotImplementedError

        ask = self.password_prompt or getpass.getpass  # looked up now: ipykernel swaps it in per request
        try:
            answer = ask(prompt)
        except (StdinNotImplementedError, EOFError, OSError, RuntimeError):
            raise UsageError(f"{self.family}: no password given and this front end cannot ask for one; "
                             "write USER:{password} with the password in a variable") from None
        if not answer:
            raise UsageError(f"{self.family}: no password given")
        return answer

    # -- NAME << COMMAND ------------------------------------------------------------------------
    def keep(self, capture: str | None, result: Any) -> Any:
        """With ``NAME <<``: the result goes to the user variable NAME and nothing is shown."""
        if capture is None:
            return result
        self.shell.user_ns[capture] = result
        return None

    # -- dispatch -------------------------------------------------------------------------------
    def commands(self) -> CommandTable:
        """``{command: (parser, handler)}``; ``parser`` is a ``@magic_arguments`` function or None."""
        return {}

    def unknown(self, command: str) -> UsageError:
        return UsageError(f"{self.family}: unknown command {command!r}; usage: {self.usage}")

    def parse(self, parser: Callable[..., Any], args: str | list[str], command: str) -> Any:
        """Parsed arguments of ``command``; argparse's complaints become one-line UsageErrors."""
        try:
            if isinstance(args, list):  # words already split shell-like: hand them to argparse as they are
                return parser.parser.parse_args(args)
            return parse_argstring(parser, args)
        except UsageError as exc:
            raise UsageError(f"{self.family} {command}: {exc}") from None
        except SystemExit:  # `-h` makes argparse print the help and exit: it is shown, stop here
            raise UsageError(f"{self.family} {command}: see the usage above") from None
        except ValueError as exc:  # unbalanced quotes in shlex
            raise UsageError(f"{self.family} {command}: bad arguments ({exc})") from None

    def dispatch(self, command: str, args: str | list[str], *extra: Any) -> Any:
        """Run ``command`` from the table: its handler gets the parsed arguments (or ``args``) and ``extra``."""
        entry = self.commands().get(command)
        if entry is None:
            raise self.unknown(command)
        parser, handler = entry
        return handler(args if parser is None else self.parse(parser, args, command), *extra)

    # -- completion -----------------------------------------------------------------------------
    def add_completer(self, complete: Callable[[Any, Any], list[str]], *keys: str) -> None:
        """Complete the lines of ``%family`` (and any other ``keys``) with ``complete(shell, event)``."""
        self._completers = [(key, complete) for key in keys or (f"%{self.family}",)]
        if self.shell is not None:
            for key, _ in self._completers:
                self.shell.set_hook("complete_command", complete, str_key=key)

    def remove_completers(self) -> None:
        """Forget this family's completions (on unload), leaving others' on the same keys."""
        dispatch = getattr(self.shell, "strdispatchers", {}).get("complete_command") if self.shell else None
        for key, complete in getattr(self, "_completers", []):
            chain = dispatch.strs.get(key) if dispatch is not None else None
            if chain is None:
                continue
            # set_hook wraps the hook in a method of the shell: its __func__ is what was given
            chain.chain = [(p, f) for p, f in chain.chain if getattr(f, "__func__", f) is not complete]
            if not chain.chain:
                del dispatch.strs[key]
        self._completers = []

    @staticmethod
    def words(text: str) -> list[str]:
        """Shell-like words of a line being completed (one empty word when a new one starts)."""
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        if text.endswith((" ", "\t")):
            words.append("")
        return words


__all__ = ["CAPTURE", "CommandTable", "SubsystemMagic", "capture_words", "disconnect_arguments", "redact",
           "secrets_in", "split_capture"]
