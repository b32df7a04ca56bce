"""What every magic family shares through SubsystemMagic: `NAME <<`, one redaction, the command table."""

from __future__ import annotations

import socket

import pytest
from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from workbench_jupyter.subsystem_magic import SubsystemMagic, capture_words, redact, secrets_in, split_capture

SECRET = "hunter2-Zq"


def closed_port() -> int:
    """A port nothing listens on (bound, then closed): connecting there is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a family of its own, to see the base at work ------------------------------------------------------
@magic_arguments(name="things show")
@argument("name")
def _show_arguments(line: str) -> None:
    """Show a thing."""


@magics_class
class ThingsMagic(SubsystemMagic):
    family = "things"
    usage = "%things list | show NAME | VAR << COMMAND"

    def commands(self):
        return {"list": (None, lambda args: ["a", "b"]), "show": (_show_arguments, lambda parsed: parsed.name),
                "fail": (None, lambda args: self._fail(args))}

    def secrets(self):
        return ("held-secret",)

    @staticmethod
    def _fail(args: str) -> None:
        raise UsageError(f"things: cannot reach {args} with held-secret")

    @line_magic("things")
    def things(self, line: str):
        def run():
            capture, rest = split_capture(line)
            command, _, args = rest.strip().partition(" ")
            return self.keep(capture, self.dispatch(command, args.strip()))
        return self.guarded(line, run)


@pytest.fixture
def things(shell):
    magics = ThingsMagic(shell=shell)
    shell.register_magics(magics)
    yield shell
    shell.magics_manager.magics["line"].pop("things", None)
    shell.configurables.remove(magics)


def test_the_capture_syntax():
    assert split_capture("out << show x") == ("out", " show x")
    assert split_capture("  out<<show x") == ("out", "show x")
    assert split_capture("%%\nbody << not") == (None, "%%\nbody << not")
    assert split_capture("x <<< y") == (None, "x <<< y")  # a shift, not a capture
    assert split_capture("show x") == (None, "show x")
    assert capture_words(["out", "<<", "show", "x"]) == ["show", "x"]
    assert capture_words(["out<<", "show"]) == ["show"]
    assert capture_words(["out<<show", ""]) == ["show", ""]
    assert capture_words(["show", "x"]) == ["show", "x"]


def test_a_result_is_kept_with_capture_and_shown_without(things):
    assert things.run_line_magic("things", "list") == ["a", "b"]
    assert things.run_line_magic("things", "kept << show thing-1") is None
    assert things.user_ns["kept"] == "thing-1"


def test_an_unknown_command_is_one_short_usage_error(things):
    with pytest.raises(UsageError) as caught:
        things.run_line_magic("things", "frobnicate")
    assert str(caught.value) == "things: unknown command 'frobnicate'; usage: %things list | show NAME | VAR << COMMAND"
    with pytest.raises(UsageError, match=r"^things show: .*required: name"):
        things.run_line_magic("things", "show")


def test_redact_hides_url_passwords_password_options_and_known_secrets():
    text = (f"postgresql://u:{SECRET}@db:5432/x and zdb://v:{SECRET}x@h:1 --password {SECRET} "
            f"--db-password='{SECRET}' --token={SECRET} then held")
    assert redact(text, ("held",)) == ("postgresql://u:***@db:5432/x and zdb://v:***@h:1 --password *** "
                                       "--db-password='***' --token=*** then ***")
    assert set(secrets_in(text)) == {SECRET, SECRET + "x"}
    assert redact("no secrets in http://host:8080/path") == "no secrets in http://host:8080/path"


def test_messages_never_show_the_family_secrets_or_the_line_passwords(things):
    with pytest.raises(UsageError) as caught:
        things.run_line_magic("things", f"fail http://u:{SECRET}@h:1/ --password {SECRET}")
    assert SECRET not in str(caught.value) and "held-secret" not in str(caught.value)
    assert str(caught.value) == "things: cannot reach http://u:***@h:1/ --password *** with ***"


# -- every family ----------------------------------------------------------------------------------------
def _message(shell, line: str) -> str:
    with pytest.raises(UsageError) as caught:
        shell.run_cell(line)
    return str(caught.value)


def test_clusters_never_echoes_a_password(loaded, tmp_path):
    loaded.user_ns["state_dir"] = str(tmp_path / "state")
    loaded.run_cell("%config ClustersMagic.state_dir = state_dir")
    message = _message(loaded, f"%clusters create cache --datastore redis-7 --password {SECRET}")
    assert SECRET not in message and message.startswith("clusters create: unrecognized arguments: --password")
    message = _message(loaded, f"%clusters show http://u:{SECRET}@h:1/")
    assert SECRET not in message
    loaded.user_ns["url"] = f"postgresql://u:{SECRET}@127.0.0.1:{closed_port()}/x"
    loaded.run_cell("%config ClustersMagic.database_url = url")
    try:
        message = _message(loaded, "%clusters list")
    finally:  # %config outlives the extension in this shell: later tests need the default database
        loaded.run_cell("%config ClustersMagic.database_url = ''")
    assert SECRET not in message and "cannot open the state database postgresql://u:***@" in message


@pytest.mark.parametrize("line", [
    "%domain connect 127.0.0.1:{port} domain:{secret}",
    "%zdb connect zdb://u:{secret}@127.0.0.1:{port}",
    "%commits connect http://u:{secret}@127.0.0.1:{port}",
    "%commits connect http://127.0.0.1:{port} --token {secret}",
    "%inventory connect http://u:{secret}@127.0.0.1:{port}",
    "%inventory connect --store postgresql://u:{secret}@127.0.0.1:{port}/x",
])
def test_no_family_echoes_a_password_given_on_its_line(loaded, known_brokers, line):
    message = _message(loaded, line.format(port=closed_port(), secret=SECRET))
    assert SECRET not in message
    assert "Traceback" not in message


@pytest.mark.parametrize("magic", ["domain", "commits", "inventory", "clusters"])
def test_every_family_answers_an_unknown_command_with_one_short_usage_error(loaded, tmp_path, magic):
    loaded.user_ns["state_dir"] = str(tmp_path / "state")
    loaded.run_cell("%config ClustersMagic.state_dir = state_dir")
    message = _message(loaded, f"%{magic} frobnicate")
    assert message.startswith(f"{magic}: unknown command 'frobnicate'; usage: ")
    assert "\n" not in message


def test_zdb_commands_go_through_the_table(loaded):
    magics = loaded.magics_manager.registry["Zdb"]
    assert list(magics.commands()) == ["connect", "disconnect", "undo", "redo", "save", "lock", "unlock", "status",
                                       "dashboard"]
    with pytest.raises(UsageError, match="^zdb: unknown command 'frobnicate'"):
        magics.dispatch("frobnicate", "", None)
    assert _message(loaded, "%zdb undo").startswith("zdb: not connected")
