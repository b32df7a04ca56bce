"""``workbench clusters`` end to end: create (waiting and in the background), list, show, perform,
backup, destroy, bad input; state in a SQLite file under --state-dir or in --db."""

from __future__ import annotations

import time

import redis

from workbench.cli import main
from workbench.testing.services import traversable_tempdir


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["clusters", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_flags(tmp_path, instances) -> list[str]:
    """The flags of a CLI whose state and instances are the test's own."""
    config = tmp_path / "clusters.toml"
    config.write_text(f'instances_dir = "{instances}"\nmaster_key = "cli-test"\nmax_cluster_size = 3\n')
    return ["--state-dir", str(tmp_path / "state"), "--config", str(config)]


def test_cli_create_list_show_perform_backup_destroy(tmp_path, capsys):
    import shutil

    instances = traversable_tempdir("wb-cli-")
    flags = cli_flags(tmp_path, instances)
    try:
        code, out, _ = run(capsys, *flags, "create", "web", "--datastore", "redis", "--size", "2", "--wait")
        assert code == 0, out
        assert "cluster web: redis - 7, 2 node(s), provider local, active" in out
        assert (tmp_path / "state" / "clusters.db").exists()

        code, out, _ = run(capsys, *flags, "show", "web")
        lines = out.splitlines()
        assert lines[1].split()[:5] == ["INSTANCE", "ROLE", "ADDRESS", "PORT", "STATUS"]
        rows = [line.split() for line in lines[2:]]
        assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("web-1", "primary", "127.0.0.1", "active"),
                                                            ("web-2", "replica", "127.0.0.1", "active")]
        primary_port = int(rows[0][3])
        redis.Redis("127.0.0.1", primary_port).set("k", "v")

        code, out, _ = run(capsys, *flags, "perform", "web", "echo hi from $(basename $PWD)", "echo done")
        assert code == 0 and "[web-1] hi from" in out and "[web-2] done" in out
        code, out, _ = run(capsys, *flags, "perform", "web", "redis-cli -p $WB_PORT info replication | grep ^role:")
        assert code == 0 and "[web-1] role:master" in out and "[web-2] role:slave" in out
        code, out, _ = run(capsys, *flags, "perform", "web-2", "echo $WB_ROLE $WB_DATASTORE $WB_ADDRESS")
        assert code == 0 and "[web-2] replica redis-7 127.0.0.1" in out

        code, out, _ = run(capsys, *flags, "backup", "web")
        assert code == 0 and out.startswith("backup web-") and "bytes in" in out
        backup_name = out.split()[1].rstrip(":")

        # without --wait the build goes on in a detached worker after the command returned
        code, out, _ = run(capsys, *flags, "create", "copy", "--datastore", "redis", "--restore", backup_name)
        assert code == 0 and "in the background" in out
        deadline = time.monotonic() + 120
        while True:
            code, out, _ = run(capsys, *flags, "show", "copy")
            if "active" in out.splitlines()[0] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "active" in out.splitlines()[0], out
        copy_port = int(out.splitlines()[2].split()[3])
        assert redis.Redis("127.0.0.1", copy_port).get("k") == b"v"

        code, out, _ = run(capsys, *flags, "list")
        assert [line.split()[0] for line in out.splitlines()] == ["NAME", "web", "copy"]

        # bad input: clear errors, nothing recorded
        for argv, expected in [(["create", "Bad_Name", "--datastore", "redis"], "field=name"),
                               (["create", "x", "--datastore", "mongodb"], "unknown datastore"),
                               (["create", "y", "--datastore", "redis", "--size", "4"], "max_cluster_size"),
                               (["show", "nosuch"], "no cluster nosuch"),
                               (["create", "web", "--datastore", "redis"], "exists")]:
            code, out, err = run(capsys, *flags, *argv)
            assert code == 1 and expected in err, (argv, err)
        code, out, _ = run(capsys, *flags, "list")
        assert len(out.splitlines()) == 3

        for name in ("web", "copy"):
            code, out, _ = run(capsys, *flags, "destroy", name)
            assert code == 0 and f"cluster {name} destroyed" in out
        code, out, _ = run(capsys, *flags, "list")
        assert out.splitlines() == ["NAME  DATASTORE  SIZE  PROVIDER  STATUS  MESSAGE"]
        assert list(instances.iterdir()) == [] or all(not any(p.iterdir()) for p in instances.iterdir())
    finally:
        shutil.rmtree(instances, ignore_errors=True)


def test_cli_state_in_a_database_url(tmp_path, capsys, postgres_url):
    flags = ["--db", postgres_url, "--state-dir", str(tmp_path / "state")]
    code, out, _ = run(capsys, *flags, "list")
    assert code == 0 and out.splitlines() == ["NAME  DATASTORE  SIZE  PROVIDER  STATUS  MESSAGE"]
    code, _, err = run(capsys, *flags, "destroy", "ghost")
    assert code == 1 and "no cluster ghost" in err
    assert not (tmp_path / "state" / "clusters.db").exists()


def test_cli_configuration_groups_and_backup_schedules(tmp_path, capsys):
    import shutil

    instances = traversable_tempdir("wb-cli-")
    flags = cli_flags(tmp_path, instances)
    try:
        code, out, _ = run(capsys, *flags, "create", "cache", "--datastore", "redis", "--wait")
        assert code == 0, out
        port = int(out.splitlines()[2].split()[3])
        code, out, _ = run(capsys, *flags, "configuration-create", "lean", "--datastore", "redis",
                           "--set", "maxmemory=1048576", "--set", "maxmemory-policy=allkeys-lru")
        assert code == 0 and out.strip() == ("configuration 1 (lean) for redis - 7: maxmemory=1048576, "
                                             "maxmemory-policy=allkeys-lru"), out
        code, _, err = run(capsys, *flags, "configuration-create", "bad", "--datastore", "redis", "--set", "save=1")
        assert code == 1 and "parameter save is not supported" in err

        code, out, _ = run(capsys, *flags, "configure", "cache", "lean")
        assert code == 0 and out.strip() == "cluster cache: configuration lean; restarted: none", out
        server = redis.Redis("127.0.0.1", port, decode_responses=True)
        assert server.config_get("maxmemory") == {"maxmemory": "1048576"}
        assert server.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        code, out, _ = run(capsys, *flags, "configurations")
        assert out.splitlines()[1].split() == ["1", "lean", "redis", "-", "7", "maxmemory=1048576",
                                                   "maxmemory-policy=allkeys-lru", "cache-1"]
        code, out, _ = run(capsys, *flags, "configure", "cache", "none")
        assert code == 0 and "restarted: cache-1" in out  # values dropped: read again from the config file
        assert server.config_get("maxmemory") == {"maxmemory": "0"}

        code, out, _ = run(capsys, *flags, "schedule", "cache", "--every", "3600", "--keep", "7")
        assert code == 0 and "a backup every 3600s, the newest 7 kept" in out
        code, out, _ = run(capsys, *flags, "schedule", "cache")
        assert "next at" in out
        code, out, _ = run(capsys, *flags, "schedule", "cache", "--off")
        assert code == 0 and "no scheduled backups" in out
        code, _, err = run(capsys, *flags, "schedule", "cache", "--off")
        assert code == 1 and "has no backup schedule" in err
        code, out, _ = run(capsys, *flags, "destroy", "cache")
        assert code == 0
    finally:
        shutil.rmtree(instances, ignore_errors=True)
