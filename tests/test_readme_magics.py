"""README's magic examples, line by line as a newcomer types them, in a test shell against a real stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.testing.readme import run_by

ROOT = Path(__file__).resolve().parent.parent

#: what the README writes for the default endpoints, and which endpoint of the test stack each stands for
DEFAULTS = {"localhost:48004": ("domain", "broker"), "http://localhost:8080": ("commits", "url"),
            "http://localhost:8081": ("inventory", "web")}


def readme_magic_lines() -> list[str]:
    """The lines of the README's block of magics (marked as run by this file), comments dropped."""
    [block] = run_by(__file__)
    assert block.line > (ROOT / "README.md").read_text().splitlines().index("## The magics")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.text.splitlines()]
    return [line for line in lines if line]


def test_every_line_of_the_block_is_a_magic():
    # a bare `procs << processes` would be Python (a NameError), not the %domain capture it stands for
    assert [line for line in readme_magic_lines() if not line.startswith("%")] == []


@pytest.fixture
def stack(tmp_path, known_brokers, monkeypatch):
    from workbench.stack import EmbeddedStack

    with EmbeddedStack(tmp_path / "stack", domain_port=0, commits_port=0, inventory_web_port=0,
                       clusters_port=0) as running:
        monkeypatch.setenv("WORKBENCH_STACK", str(running.stack_file))
        yield running


def test_the_readme_magics_run_as_written_against_a_stack(stack, loaded, capsys):
    endpoints, credentials = stack.endpoints(), stack.credentials
    passwords = {"password of domain on": credentials["domain"]["password"],
                 "password of database user dba": credentials["zdb"]["password"],
                 "password of dba on": credentials["zdb"]["password"]}
    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return next(password for start, password in passwords.items() if text.startswith(start))

    registry = loaded.magics_manager.registry
    for family in ("DomainMagic", "Zdb"):
        registry[family].password_prompt = prompt
    started_te = None
    try:
        for line in readme_magic_lines():
            if line == "%load_ext workbench":
                continue  # the fixture loaded it
            for default, (system, key) in DEFAULTS.items():
                line = line.replace(default, str(endpoints[system][key]))
            if " | " in line:  # alternatives: the first, on the TE the README started
                line = line.split(" | ")[0].replace("48802", str(started_te.port))
            if line.startswith("%commits log "):  # the line before says how a key gets its first commit
                key = line.split()[2]
                cell = f"%%commits {key} -m 'first {key}'\n" + '{"max_connections": 100}\n'
                assert loaded.run_cell(cell).error_in_exec is None
            body = "print('fixed')\n"
            if line.startswith("%%inventory exec --write"):  # the bash example: an admin authorizes it first
                title = line.split("--title ")[1].split()[0]
                assert loaded.run_cell(f"%%inventory exec-auth --title {title}\n{body}").error_in_exec is None
            if line.startswith("%%"):
                result = loaded.run_cell(f"{line}\n{body}")
            else:
                result = loaded.run_cell(line)
            assert result.error_in_exec is None and result.error_before_exec is None, \
                f"{line}: {result.error_in_exec or result.error_before_exec}"
            if line.startswith("%domain start te"):
                started_te = result.result
        assert len(prompts) == 3, prompts  # %domain connect, --dba dba, %zdb connect: each asked once
        assert "procs" in loaded.user_ns and list(loaded.user_ns["procs"]["database"]).count("demo") >= 2
        assert loaded.run_cell('%zdb db["shift"]').result == {"on_call": "ops"}
        out = capsys.readouterr().out
        assert "role:master" in out and out.count("role:slave") == 2, out
    finally:
        for family in ("DomainMagic", "Zdb"):
            registry[family].password_prompt = None
        magic = registry["ClustersMagic"]
        if magic.sessions.current_session is not None:
            for view in magic.store.cluster_views():
                magic.runner.destroy_cluster(view.name).wait(timeout=120)
        for name in ("procs", "db", "domain"):
            loaded.user_ns.pop(name, None)
