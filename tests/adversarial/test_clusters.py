"""clusters attacked through what a caller controls: package names that are really options (a root
command hook for apt-get), other fields that reach commands or columns, the API token, and fuzzed
JSON bodies on every route of the HTTP API.

The injection run goes over the session's real sshd: a logging stand-in for ``apt-get`` first on the
remote PATH records every argument it was given, so the test sees exactly what reached it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import text

from workbench.clusters.api import ClustersApi
from workbench.clusters.connection import SshConnection
from workbench.clusters.errors import ManagerError, ProviderError, ValidationError
from workbench.clusters.managers.base import BaseManager
from workbench.clusters.models import ClusterStore, Datastore
from workbench.clusters.providers.base import BaseProvider
from workbench.clusters.settings import DEFAULT_MANAGERS, Settings
from workbench.testing.adversarial import (ProcessBounds, answers_within, fuzz_messages, fuzz_random, mutate,
                                          send_until_refused)

TOKEN = "adversarial-clusters-token"

#: what a caller might put in a datastore's ``packages`` to make the package manager run something
INJECTED = [
    "-oDPkg::Pre-Invoke::=touch /tmp/wb-pwned",
    "redis-server,-oDPkg::Pre-Invoke::=touch /tmp/wb-pwned",
    "redis-server, --allow-unauthenticated",
    "--reinstall",
    "-",
    "--",
    "-y",
    "redis-server -oAPT::Update::Pre-Invoke::=id",
    "redis server",
    "redis-server;id",
    "$(id)",
    "`id`",
    "a\nb",
    "redis\tserver",
    "redis-server\x00",
    "../../etc/passwd",
    "/tmp/evil.deb",
    "./evil.deb",
    "redis-server=--force",
    "redis-server=1.0 -oX=y",
    "redis-server:amd64:-o",
    "Redis-Server",
    "r",
    ",".join(["pkg"] * 400),
    "redis-server=",
    "redis-server:",
]
#: package names the rule must keep accepting
VALID = ["redis-server", "mariadb-server, mariadb-client", "libc6:amd64", "redis-server=5:7.0.15-1",
         "g++", "python3.11", "postgresql-15", "libstdc++6=12.2.0-14+deb12u1"]


# -- the model and the store --------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path) -> Iterator[ClusterStore]:
    settings = Settings(master_key="adversarial-master", state_dir=str(tmp_path / "state"), max_cluster_size=3,
                        datastore_managers={**DEFAULT_MANAGERS, "tool": f"{__name__}:ToolManager"},
                        providers={"local": f"{__name__}:NoServers"})
    with ClusterStore(f"sqlite:///{tmp_path / 'clusters.db'}", settings) as opened:
        yield opened


@pytest.mark.parametrize("packages", INJECTED)
def test_package_names_that_are_not_package_names_are_refused_by_the_store_and_the_model(store, packages):
    with pytest.raises(ValidationError) as refused:
        store.add_datastore("redis", "7", packages=packages)
    assert refused.value.fields["field"] == "packages"
    with pytest.raises(ValidationError):
        Datastore(manager="redis", version="7", packages=packages)
    assert store.datastores() == []


def test_debian_package_names_are_accepted(store):
    for number, packages in enumerate(VALID):
        datastore = store.add_datastore("redis", f"7.{number}", packages=packages)
        assert datastore.package_list == [p.strip() for p in packages.split(",")]


@pytest.mark.parametrize("field, value", [("version", "-oX"), ("version", "7 --x"), ("version", "7\n"),
                                          ("image", "x" * 300), ("image", "ubuntu\x00"), ("image", "a\nb")])
def test_other_datastore_fields_are_checked_too(store, field, value):
    arguments = {"manager": "redis", "version": "7", "image": "", "packages": "", field: value}
    with pytest.raises(ValidationError) as refused:
        store.add_datastore(**arguments)
    assert refused.value.fields["field"] == field


@pytest.mark.parametrize("name", ["cache\n", "cache\nrm", "-cache", "cache x"])
def test_names_that_end_in_a_newline_are_not_names(store, name):
    from workbench.clusters.managers.base import check_sql_name
    from workbench.clusters.models import check_name

    with pytest.raises(ValidationError):
        check_name(name)
    if "\n" in name:
        with pytest.raises(ValidationError):
            check_sql_name(name, "user")
    store.add_datastore("redis", "7")
    with pytest.raises(ValidationError):
        store.create_cluster(name, "redis-7")


@pytest.mark.parametrize("option, value", [("instances_dir", "-rf"), ("instances_dir", "relative/dir"),
                                           ("ssh_user", "-oProxyCommand=id"), ("ssh_user", "root x")])
def test_settings_that_reach_command_lines_cannot_be_options(option, value):
    from workbench.clusters.errors import SettingsError

    with pytest.raises(SettingsError) as refused:
        Settings(master_key="m", **{option: value})
    assert refused.value.fields["option"] == option


# -- a real SSH run: what reaches apt-get -------------------------------------------------------------
class ToolManager(BaseManager):
    """Needs a binary no host has, so ``ensure_packages`` asks the package manager for it."""

    required_binaries = ("wb-adversarial-tool",)

    @property
    def name(self) -> str:
        return "tool"


class _Runtime:
    def __init__(self) -> None:
        self.settings = Settings(master_key="m")


FAKE_APT_GET = """#!/bin/sh
# stands in for apt-get: records each argument on its own line, then "installs" the tool
{{ echo "call"; for a in "$@"; do printf 'arg:%s\\n' "$a"; done; }} >> {log}
printf '#!/bin/sh\\necho tool\\n' > {bin}/wb-adversarial-tool && chmod +x {bin}/wb-adversarial-tool
"""


@pytest.fixture
def fake_apt_host(ssh_server, tmp_path) -> Iterator[tuple[SshConnection, Path, Path]]:
    """An SSH connection whose remote PATH starts with a directory holding the logging apt-get."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "apt-get.log"
    log.touch()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(FAKE_APT_GET.format(log=log, bin=bin_dir))
    apt_get.chmod(0o755)
    host_key = " ".join(Path(f"{ssh_server.host_key_path}.pub").read_text().split()[:2])
    conn = SshConnection(ssh_server.host, ssh_server.port, ssh_server.username,
                         key_filename=str(ssh_server.client_key_path), known_hosts=tmp_path / "known_hosts",
                         trusted_host_key=host_key, timeout=60, prefix=f'env PATH={bin_dir}:"$PATH" ')
    try:
        yield conn, log, bin_dir
    finally:
        conn.close()


def apt_get_calls(log: Path) -> list[list[str]]:
    calls: list[list[str]] = []
    for line in log.read_text().splitlines():
        if line == "call":
            calls.append([])
        elif line.startswith("arg:"):
            calls[-1].append(line[4:])
    return calls


def stored_datastore(store: ClusterStore, packages: str) -> Datastore:
    """A datastore row whose packages never went through the model's checks (an older database,
    or one written by hand): the manager must refuse them on its own."""
    datastore = store.add_datastore("tool", "1")
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE clusters_datastores SET packages = :p WHERE id = :i"),
                           {"p": packages, "i": datastore.id})
    return store.get_datastore(datastore.id)


@pytest.mark.parametrize("packages", ["-oDPkg::Pre-Invoke::=touch /tmp/wb-pwned",
                                      "wb-adversarial-tool,-oDPkg::Pre-Invoke::=id", "--allow-unauthenticated"])
def test_an_injected_option_never_reaches_apt_get_over_ssh(store, fake_apt_host, packages):
    conn, log, _ = fake_apt_host
    manager = ToolManager(stored_datastore(store, packages), _Runtime())
    try:
        manager.ensure_packages(conn)
        raised: Exception | None = None
    except (ValidationError, ManagerError) as exc:
        raised = exc
    for call in apt_get_calls(log):
        words = call[call.index("--") + 1:] if "--" in call else call
        options = [w for w in (call[:call.index("--")] if "--" in call else call) if w.startswith("-")]
        assert set(options) <= {"-y", "--no-install-recommends"}, f"apt-get got the options {options}"
        assert not any(w.startswith("-") for w in words[words.index("install") + 1:] if "install" in words), call
    assert apt_get_calls(log) == [], "apt-get ran with a package list that holds an option"
    assert isinstance(raised, ValidationError) and "packages" in str(raised)


def test_package_names_reach_apt_get_after_the_end_of_options_over_ssh(store, fake_apt_host):
    conn, log, _ = fake_apt_host
    datastore = store.add_datastore("tool", "2", packages="wb-adversarial-tool, wb-adversarial-doc")
    binaries = ToolManager(datastore, _Runtime()).ensure_packages(conn)
    assert "wb-adversarial-tool" in binaries
    [call] = apt_get_calls(log)
    assert call == ["install", "-y", "--no-install-recommends", "--", "wb-adversarial-tool", "wb-adversarial-doc"]


# -- the HTTP API -------------------------------------------------------------------------------------
class NoServers(BaseProvider):
    """A provider that never makes a server: fuzzed cluster requests build nothing."""

    def create(self, instance: Any, **kwargs: Any) -> None:
        raise ProviderError("this provider makes no servers", instance=instance.name)

    def destroy(self, instance: Any) -> None:
        return None


@pytest.fixture
def api(store) -> Iterator[ClustersApi]:
    store.add_datastore("redis", "7")
    server = ClustersApi(store, token=TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


def call(api: ClustersApi, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(api.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"{}")


def authorized(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json", **(extra or {})}


@pytest.mark.parametrize("packages", INJECTED[:12] + ["x" * 2000])
def test_the_api_refuses_injected_package_names(api, packages):
    status, body = call(api, "POST", "/api/datastores",
                        json.dumps({"manager": "redis", "version": "8", "packages": packages}).encode(), authorized())
    assert status == 400 and "packages" in body["fields"], body
    assert [d["version"] for d in call(api, "GET", "/api/datastores", headers=authorized())[1]["datastores"]] == ["7"]


BYPASS = [{}, {"Authorization": "Token"}, {"Authorization": "Token "}, {"Authorization": "Token wrong"},
          {"Authorization": f"Token {TOKEN[:-1]}"}, {"Authorization": f"Token {TOKEN}x"},
          {"Authorization": f"Token {TOKEN.upper()}"}, {"Authorization": f"Basic {TOKEN}"},
          {"Authorization": f"Digest {TOKEN}"}, {"X-Auth-Token": ""}, {"X-Auth-Token": "wrong"},
          {"Authorization": "Token wrong", "X-Auth-Token": TOKEN[:-1]}, {"Cookie": f"token={TOKEN}"},
          {"X-Auth-Token": TOKEN + "\u00e9"}, {"Authorization": "Bearer \u00e9\u00e9"}]
ROUTES = [("GET", "/api/datastores"), ("POST", "/api/datastores"), ("GET", "/api/datastores/1"),
          ("GET", "/api/clusters"), ("POST", "/api/clusters"), ("GET", "/api/clusters/c"),
          ("DELETE", "/api/clusters/c"), ("POST", "/api/clusters/c/nodes"), ("GET", "/api/clusters/c/backups"),
          ("POST", "/api/clusters/c/backups"), ("GET", "/api/tasks/1"), ("GET", "/nope"), ("OPTIONS", "/api/clusters"),
          ("PUT", "/api/clusters/c")]


def test_every_route_refuses_callers_without_the_token(api, store):
    attempts = 0
    for headers in BYPASS:
        for method, path in ROUTES:
            body = b'{"manager": "redis", "version": "9", "name": "mallory", "datastore": "redis-7"}' \
                if method in ("POST", "PUT") else None
            raw_headers = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
            status, _ = call(api, method, path, body, {**raw_headers, "Content-Type": "application/json"})
            assert status == 401, (headers, method, path, status)
            attempts += 1
    print(f"clusters API: {attempts} bypass attempts, all refused")
    assert [d.version for d in store.datastores()] == ["7"] and store.clusters() == []


def fuzz_body(rng) -> bytes:
    """A JSON body for a random route: right-looking fields with wrong types, sizes and values."""
    values = [None, True, 0, -1, 1, 2**63, 2**70, 10**400, 1.5, float("inf"), "", "x" * 5000, "redis", "redis-7",
              "-oDPkg::Pre-Invoke::=id", "\u00e9", "\x00", "../x", "7", [], {}, [1], {"a": 1}, "a b", "9" * 30]
    fields = ["name", "datastore", "version", "size", "provider", "restore_from", "manager", "image", "packages",
              "count", "extra"]
    if rng.random() < 0.15:
        return rng.choice([b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b"", b"null", b"[]", b"1e999",
                           b'{"name": NaN}', b'"x"'])
    body = {name: rng.choice(values) for name in rng.sample(fields, rng.randrange(1, 5))}
    try:
        raw = json.dumps(body).encode()
    except ValueError:
        raw = b"{}"
    return mutate(raw, rng) if rng.random() < 0.3 else raw


FUZZ_ROUTES = [("POST", "/api/datastores"), ("POST", "/api/clusters"), ("POST", "/api/clusters/{ref}/nodes"),
               ("POST", "/api/clusters/{ref}/backups"), ("GET", "/api/clusters/{ref}"), ("DELETE", "/api/clusters/{ref}"),
               ("GET", "/api/datastores/{ref}"), ("GET", "/api/tasks/{num}"), ("GET", "/api/clusters/{ref}/backups")]
REFS = ["1", "0", "c", "9" * 30, "9" * 19, "redis-7", "a.b", "-1", "x" * 300, "_"]


def test_fuzzed_api_bodies_and_paths_never_get_a_5xx(api, caplog):
    rng = fuzz_random()
    budget = fuzz_messages()
    before = ProcessBounds.of(os.getpid())
    seen: Counter[int] = Counter()
    errors: list[tuple[str, str, bytes, int, Any]] = []
    with caplog.at_level(logging.ERROR):
        for _ in range(budget):
            method, template = rng.choice(FUZZ_ROUTES)
            path = template.format(ref=rng.choice(REFS), num=rng.choice(["1", "0", "9" * 19, "9" * 30, "99"]))
            body = fuzz_body(rng) if method == "POST" else None
            status, answer = call(api, method, path, body, authorized())
            seen[status] += 1
            if status >= 500:
                errors.append((method, path, (body or b"")[:200], status, answer))
    print(f"clusters API: {budget} fuzzed requests (seed {rng.seed_value}): {dict(seen)}")
    assert not errors, f"{len(errors)} 5xx answers (seed {rng.seed_value}), e.g. {errors[:3]}"
    tracebacks = [r for r in caplog.records if r.name.startswith("tornado") and r.levelno >= logging.ERROR]
    assert not tracebacks, tracebacks[0].getMessage()
    status, _ = answers_within(lambda: call(api, "GET", "/api/datastores", headers=authorized()))  # type: ignore[misc]
    assert status == 200
    ProcessBounds.of(os.getpid()).assert_within(before, rss_mib=64, fds=16, children=64)
    with socket.create_connection((api._http.host, api._http.port), timeout=5):
        pass


# -- secrets stay off command lines ------------------------------------------------------------------
def _processes_with(word: str) -> dict[int, bytes]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if word.encode() in cmdline:
                found[int(entry)] = cmdline
    return found


def test_the_database_password_stays_off_the_background_workers_command_line(mariadb_server, tmp_path):
    import subprocess
    import sys
    import time

    from workbench.testing.services import traversable_tempdir

    instances = traversable_tempdir("wb-adv-clusters-")
    env = {**os.environ, "WORKBENCH_CLUSTERS_MASTER_KEY": "adversarial-master",
           "WORKBENCH_CLUSTERS_STATE_DIR": str(tmp_path / "state"), "WORKBENCH_CLUSTERS_INSTANCES_DIR": str(instances)}
    env.pop("WORKBENCH_CLUSTERS_DATABASE_URL", None)
    name = f"adv{os.getpid()}"

    def clusters(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "workbench.clusters", "--db", url, *args], env=env,
                              capture_output=True, text=True, timeout=timeout)

    with mariadb_server.temporary_database("wb_adv_") as url:
        try:
            created = clusters("create", name, "--datastore", "redis")
            assert created.returncode == 0, created.stderr
            workers: dict[int, bytes] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                workers.update(_processes_with(f"build-worker\0{name}"))
                alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
                if workers and not alive:
                    break
                time.sleep(0.01)
            assert workers, "the background build worker was never seen"
            for cmdline in workers.values():
                assert mariadb_server.password.encode() not in cmdline, cmdline
            # a password given on the command line is warned about, never printed
            assert "command line" in created.stderr and mariadb_server.password not in created.stderr
            shown = clusters("show", name)
            assert "active" in shown.stdout, shown.stdout + shown.stderr
        finally:
            clusters("destroy", name)
            import shutil

            shutil.rmtree(instances, ignore_errors=True)


def test_the_store_url_it_shows_masks_the_password(mariadb_server):
    with mariadb_server.temporary_database("wb_adv_") as url:
        with ClusterStore(url, Settings(master_key="m")) as opened:
            assert mariadb_server.password not in opened.url and "***" in opened.url


def test_a_settings_file_with_secrets_that_others_can_read_is_warned_about(tmp_path, caplog):
    config = tmp_path / "clusters.toml"
    config.write_text('master_key = "adversarial-secret-key"\nos_password = "cloud-secret"\n')
    config.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="workbench.clusters.settings"):
        Settings.load(config, env={})
    [warning] = [r.getMessage() for r in caplog.records if r.name == "workbench.clusters.settings"]
    assert "chmod 0600" in warning and "adversarial-secret-key" not in warning and "cloud-secret" not in warning
    caplog.clear()
    config.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="workbench.clusters.settings"):
        assert Settings.load(config, env={}).master_key == "adversarial-secret-key"
    assert not [r for r in caplog.records if r.name == "workbench.clusters.settings"]


def test_an_oversized_body_is_refused_before_it_is_buffered(api):
    before = ProcessBounds.of(os.getpid())
    for headers in ({}, authorized()):
        head = (f"POST /api/datastores HTTP/1.1\r\nHost: x\r\nContent-Length: {64 << 20}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        # the server must stop reading long before the 40 MiB the helper sends at most
        sent, answer = send_until_refused((api._http.host, api._http.port), head, b"x" * 65536)
        assert sent < 40 << 20, "the server kept reading a body announced as 64 MiB"
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:100]
        assert not answer.startswith(b"HTTP/1.1 2"), answer[:100]
    status, _ = answers_within(lambda: call(api, "GET", "/api/datastores", headers=authorized()))  # type: ignore[misc]
    assert status == 200
    ProcessBounds.of(os.getpid()).assert_within(before, rss_mib=24, fds=8, children=64)
