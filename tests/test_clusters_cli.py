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


def test_cli_create_list_show_perform_backup_destroy(tmp_path, capsys):
    import shutil

    instances = traversable_tempdir("wb-cli-")
    config = tmp_path / "clusters.toml"
    config.write_text(f'instances_dir = "{instances}"\nmaster_key = "cli-test"\nmax_cluster_size = 3\n')
    flags = ["--state-dir", str(tmp_path / "state"), "--config", str(config)]
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
