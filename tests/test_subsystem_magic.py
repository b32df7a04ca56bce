"""What every magic family shares through SubsystemMagic: sessions, `NAME <<`, one redaction, the command table."""

from __future__ import annotations

import socket

import pytest
from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from workbench_jupyter import Connection, connections
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


class Thing:
    """A session of the things family: where it points, what its user variable holds, whether it was closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.target = f"thing://{name}"
        self.value = object()
        self.closed = False

    def connection_status(self) -> str:
        return "closed" if self.closed else "open"

    def close(self) -> None:
        self.closed = True


@magics_class
class ThingsMagic(SubsystemMagic):
    family = "things"
    usage = "%things list | show NAME | VAR << COMMAND"
    connect_hint = "%things open NAME first"
    variable = "thing"  # the user variable that follows the current session

    def commands(self):
        return {"list": (None, lambda args: ["a", "b"]), "show": (_show_arguments, lambda parsed: parsed.name),
                "fail": (None, lambda args: self._fail(args)), "open": (None, self._open),
                "current": (None, lambda args: self.sessions.require(args or None).name),
                "disconnect": (None, lambda args: self.disconnect(args or None))}

    def _open(self, name: str) -> None:
        self.sessions.check_name(name)
        self.sessions.add(name, Thing(name))

    def bound(self, session: Thing) -> object:
        return session.value

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
    magics.close()
    shell.magics_manager.magics["line"].pop("things", None)
    shell.configurables.remove(magics)
    shell.user_ns.pop("thing", None)
    connections.clear()  # a failed test may leave an entry another test's name would clash with


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


# -- sessions ----------------------------------------------------------------------------------------------
def things_magic(shell) -> ThingsMagic:
    return shell.magics_manager.registry["ThingsMagic"]


def test_the_newest_session_is_current_and_switching_moves_the_variable(things):
    magics = things_magic(things)
    things.run_line_magic("things", "open a")
    things.run_line_magic("things", "open b")
    a, b = magics.sessions["a"], magics.sessions["b"]
    assert list(magics.sessions) == ["a", "b"] and magics.sessions.current == "b"
    assert things.run_line_magic("things", "current") == "b" and things.user_ns["thing"] is b.value
    assert [(c.name, c.kind, c.target, c.client) for c in (connections.get("a"), connections.get("b"))] == [
        ("a", "things", "thing://a", a), ("b", "things", "thing://b", b)]
    assert magics.sessions.rows() == [("a", "things", "thing://a", "open"), ("b", "things", "thing://b", "open")]

    assert magics.sessions.switch("a") is a
    assert things.run_line_magic("things", "current") == "a" and things.user_ns["thing"] is a.value
    assert magics.sessions.current_session is a and not a.closed and not b.closed
    with pytest.raises(UsageError, match="^things: no things connection named 'nope'$"):
        magics.sessions.switch("nope")
    assert magics.sessions.current == "a" and things.user_ns["thing"] is a.value


def test_closing_a_session_makes_the_newest_left_current(things, capsys):
    magics = things_magic(things)
    for name in ("a", "b", "c"):
        things.run_line_magic("things", f"open {name}")
    a, b, c = (magics.sessions[name] for name in "abc")
    capsys.readouterr()

    things.run_line_magic("things", "disconnect")  # the current one: the newest left takes over
    assert capsys.readouterr().out == "disconnected 'c'\n"
    assert c.closed and "c" not in magics.sessions and connections.get("c") is None
    assert list(magics.sessions) == ["a", "b"] and magics.sessions.current == "b"
    assert things.user_ns["thing"] is b.value and not b.closed

    things.run_line_magic("things", "disconnect a")  # not the current one: the current stays
    assert a.closed and list(magics.sessions) == ["b"] and connections.get("a") is None
    assert magics.sessions.current == "b" and things.user_ns["thing"] is b.value

    things.run_line_magic("things", "open d")
    things.user_ns["thing"] = "the user's own"  # the user took the name: no session takes it back
    connections.add(Connection("b", "other", "elsewhere"))  # someone else's entry under that name now
    things.run_line_magic("things", "disconnect d")
    assert magics.sessions.current == "b" and things.user_ns["thing"] == "the user's own"
    things.run_line_magic("things", "disconnect b")
    assert b.closed and connections.get("b").kind == "other"  # closing removed only its own entry
    connections.remove("b")

    assert magics.sessions.current is None and len(magics.sessions) == 0
    with pytest.raises(UsageError, match=r"^things: not connected \(%things open NAME first\)$"):
        things.run_line_magic("things", "current")
    with pytest.raises(UsageError, match="^things: not connected$"):
        things.run_line_magic("things", "disconnect")
    with pytest.raises(UsageError, match="^things: no things connection named 'zz'$"):
        things.run_line_magic("things", "disconnect zz")


def test_opening_a_name_again_replaces_its_session(things):
    magics = things_magic(things)
    things.run_line_magic("things", "open a")
    first = magics.sessions["a"]
    things.run_line_magic("things", "open b")
    things.run_line_magic("things", "open a")
    second = magics.sessions["a"]
    assert second is not first and first.closed and not second.closed
    assert list(magics.sessions) == ["b", "a"] and magics.sessions.current == "a"
    assert connections.get("a").client is second and things.user_ns["thing"] is second.value


def test_a_name_another_family_holds_is_refused(things):
    connections.add(Connection("taken", "zdb", "tcp://127.0.0.1:1"))
    try:
        with pytest.raises(UsageError, match="^things: 'taken' is already a zdb connection; choose another --name$"):
            things.run_line_magic("things", "open taken")
        assert "taken" not in things_magic(things).sessions and connections.get("taken").kind == "zdb"
    finally:
        connections.remove("taken")


def test_close_closes_every_session_and_forgets_the_variable(things):
    magics = things_magic(things)
    for name in ("a", "b"):
        things.run_line_magic("things", f"open {name}")
    opened = list(magics.sessions.values())
    magics.close()
    assert all(session.closed for session in opened) and len(opened) == 2
    assert len(magics.sessions) == 0 and magics.sessions.current is None
    assert "thing" not in things.user_ns and connections.get("a") is None and connections.get("b") is None


def test_unloading_the_extension_closes_every_zdb_session(shell, sm):
    shell.run_cell("%load_ext workbench")
    magics = shell.magics_manager.registry["Zdb"]
    shell.user_ns["address"] = sm.address
    try:
        shell.run_cell("%zdb connect {address} --name first")
        shell.run_cell("%zdb connect {address} --name second")
        first, second = magics.sessions["first"], magics.sessions["second"]
        assert magics.sessions.current == "second" and shell.user_ns["db"] is second.db
        shell.run_cell("%zdb disconnect")
        assert second.closed and magics.sessions.current == "first" and shell.user_ns["db"] is first.db
        shell.run_cell("%zdb connect {address} --name second")
        opened = list(magics.sessions.values())
        assert [s.name for s in opened] == ["first", "second"] and not any(s.closed for s in opened)
    finally:
        shell.run_cell("%unload_ext workbench")
        left = [c.name for c in connections]
        connections.clear()
        shell.user_ns.pop("address", None)
    assert all(s.closed and s.connection_status() == "closed" for s in opened)
    assert left == [] and len(magics.sessions) == 0 and "db" not in shell.user_ns


def test_the_inventory_variable_follows_the_current_store(loaded, tmp_path):
    magics = loaded.magics_manager.registry["InventoryMagic"]
    for name in ("one", "two"):
        loaded.user_ns["url"] = f"sqlite:///{tmp_path / name}.db"
        loaded.run_cell(f"%inventory connect --store {{url}} --name {name}")
    one, two = magics.sessions["one"], magics.sessions["two"]
    try:
        assert loaded.user_ns["inventory"] is two.inventory and one.inventory is not two.inventory
        loaded.run_cell("%inventory disconnect")
        assert two.closed and loaded.user_ns["inventory"] is one.inventory
        assert loaded.run_cell("%inventory status").result == [("one", "inventory", one.target, "connected")]
    finally:
        loaded.user_ns.pop("url", None)
    loaded.run_cell("%unload_ext workbench")
    try:
        assert one.closed and "inventory" not in loaded.user_ns
    finally:
        loaded.run_cell("%load_ext workbench")
