"""Secrets handed to the commands: warned about where a command line shows them (ps, /proc)."""

from __future__ import annotations

import os
import sys


def warn_secret_on_command_line(what: str, environment: str) -> None:
    """Say on stderr that a secret was given where every local user can read it (``ps``)."""
    print(f"workbench: warning: {what} puts a secret on the command line, where any local user sees it "
          f"(ps, /proc); set ${environment} instead", file=sys.stderr, flush=True)


def url_from(given: str | None, flag: str, variable: str) -> str | None:
    """The URL a command was given with ``flag`` (warning when it holds a password), else ``$variable``."""
    if given:
        if url_has_password(given):
            warn_secret_on_command_line(f"{flag} holds a password", variable)
        return given
    return os.environ.get(variable) or None


def url_has_password(url: str) -> bool:
    """Whether a URL carries a password (``scheme://user:pw@host``), which must stay off command lines."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False
