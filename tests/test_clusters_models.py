"""Models and settings of workbench.clusters on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import pytest

from workbench.clusters.errors import KeyDecryptionError, NotFoundError, SettingsError, ValidationError
from workbench.clusters.models import ClusterStore, Key
from workbench.clusters.settings import Settings, StaticHost
from workbench.events import EventRecorder


@pytest.fixture
def settings(tmp_path):
    return Settings(master_key="master-secret", state_dir=str(tmp_path / "state"), max_cluster_size=4)


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def store(request, settings, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'clusters.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    store = ClusterStore(url, settings)
    yield store
    store.close()


def test_seed_example_cluster_datastore_and_instances(store):
    ds = store.add_datastore("mysql", "5.5")
    assert repr(ds) == "<Datastore: mysql - 5.5>"
    assert store.get_datastore("mysql - 5.5").id == ds.id == store.get_datastore("mysql-5.5").id
    cluster = store.create_cluster("my-cluster", ds, size=3)
    assert repr(cluster) == "<Cluster: my-cluster>"
    assert cluster.datastore.name == "mysql - 5.5"
    assert cluster.status == "new"
    assert [(i.name, i.role) for i in cluster.instances] == [
        ("my-cluster-1", "primary"), ("my-cluster-2", "replica"), ("my-cluster-3", "replica")]
    assert cluster.primary.name == "my-cluster-1"


def test_max_cluster_size_on_create_and_add_node(store):
    ds = store.add_datastore("redis", "7")
    with pytest.raises(ValidationError) as info:
        store.create_cluster("big", ds, size=5)
    assert info.value.fields["field"] == "size" and info.value.fields["limit"] == 4
    with pytest.raises(NotFoundError):
        store.get_cluster("big")  # nothing half-made is left
    store.create_cluster("small", ds, size=3)
    added = store.add_node("small")
    assert [i.name for i in added] == ["small-4"]
    with pytest.raises(ValidationError) as info:
        store.add_node("small")
    assert info.value.fields["field"] == "count"
    assert store.get_cluster("small").size == 4 and len(store.get_cluster("small").instances) == 4


def test_bad_names_and_duplicates_are_refused(store):
    ds = store.add_datastore("redis", "7")
    for bad in ["", "Upper", "a b", "x;rm -rf /", "../up", "-dash", "a" * 49]:
        with pytest.raises(ValidationError) as info:
            store.create_cluster(bad, ds)
        assert info.value.fields["field"] == "name"
    store.create_cluster("dup", ds)
    with pytest.raises(ValidationError):
        store.create_cluster("dup", ds)
    with pytest.raises(ValidationError):
        store.add_datastore("nosuch", "1")
    with pytest.raises(ValidationError):
        store.add_datastore("redis", "7; rm")
    with pytest.raises(ValidationError):
        store.create_cluster("zero", ds, size=0)
    assert [c.name for c in store.clusters()] == ["dup"]


def test_status_progress_message_are_stored_and_emitted(store):
    ds = store.add_datastore("postgresql", "15")
    recorder = EventRecorder()
    store.add_listener(recorder)
    cluster = store.create_cluster("pg", ds, size=2)
    instance = cluster.instances[1]
    store.update_instance(instance.id, status="building", progress=42, message="halfway")
    event = recorder.wait_for("instance_changed", lambda e: e.args[0].progress == 42)
    assert event.args[0].name == "pg-2" and event.args[0].message == "halfway"
    store.update_cluster("pg", status="error", message="boom")
    assert recorder.wait_for("cluster_changed", lambda e: e.args[0].status == "error").args[0].message == "boom"
    # stored, not cached: a second store on the same database sees it
    other = ClusterStore(store.url if "***" not in store.url else None, store.settings, engine=store.engine)
    again = other.get_instance("pg-2")
    assert (again.status, again.progress, again.message) == ("building", 42, "halfway")


def test_key_private_half_is_encrypted_at_rest(store, settings):
    for kind in ("ed25519", "rsa"):
        key = Key.create(f"k-{kind}", passphrase="pass phrase", kind=kind, bits=2048)
        store.add_key(key)
        loaded = store.get_key(key.id)
        pem = loaded.private_pem("pass phrase")
        assert pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        assert b"PRIVATE KEY" not in loaded.private.encode()
        assert pem.decode() not in loaded.private
        assert loaded.public.startswith("ssh-ed25519 " if kind == "ed25519" else "ssh-rsa ")
        assert loaded.paramiko_key("pass phrase").get_base64() == loaded.public.split()[1]
        with pytest.raises(KeyDecryptionError):
            loaded.private_pem("wrong")
    # the raw column holds no PEM either
    with store.engine.connect() as connection:
        from sqlalchemy import text

        rows = connection.execute(text("SELECT private FROM clusters_keys")).scalars().all()
    assert rows and all("BEGIN" not in row for row in rows)
    with pytest.raises(ValidationError):
        Key.create("weak", passphrase="p", kind="rsa", bits=1024)
    with pytest.raises(ValidationError):
        Key.create("nopass", passphrase="")


def test_cluster_gets_its_own_key_under_the_master_key(store):
    ds = store.add_datastore("redis", "7")
    cluster = store.create_cluster("keyed", ds)
    key = store.get_key(cluster.key_id)
    assert key.private_pem(store.settings.master_key)
    assert len(store.cluster_secret(cluster)) >= 24


def test_settings_defaults_env_toml_and_validation(tmp_path):
    defaults = Settings()
    assert (defaults.max_cluster_size, defaults.provider, defaults.ssh_user, defaults.command_prefix) == (
        5, "local", "root", "")
    assert set(defaults.datastore_managers) == {"mysql", "redis", "postgresql"}
    config = tmp_path / "clusters.toml"
    config.write_text('max_cluster_size = 7\ncommand_prefix = "sudo "\nprovider = "static"\n'
                      '[[static_hosts]]\naddress = "127.0.0.1"\nssh_port = 2222\nkey_file = "/k"\n'
                      'host_key = "ssh-ed25519 AAAA"\nbase_dir = "/srv/a"\n')
    loaded = Settings.load(config, env={"WORKBENCH_CLUSTERS_MAX_CLUSTER_SIZE": "9",
                                        "WORKBENCH_CLUSTERS_OS_USERNAME": "nova"})
    assert loaded.max_cluster_size == 9  # the variable wins over the file
    assert loaded.command_prefix == "sudo " and loaded.provider == "static" and loaded.os_username == "nova"
    assert loaded.static_hosts == (StaticHost(address="127.0.0.1", ssh_port=2222, key_file="/k",
                                              host_key="ssh-ed25519 AAAA", base_dir="/srv/a"),)
    assert Settings.load(env={"WORKBENCH_CLUSTERS_CONFIG": str(config)}).max_cluster_size == 7
    cases = [({"WORKBENCH_CLUSTERS_MAX_CLUSTER_SIZE": "many"}, "max_cluster_size"),
             ({"WORKBENCH_CLUSTERS_MAX_CLUSTER_SIZE": "0"}, "max_cluster_size"),
             ({"WORKBENCH_CLUSTERS_PROVIDER": "nowhere"}, "provider"),
             ({"WORKBENCH_CLUSTERS_COMMAND_PREFIX": "sudo"}, "command_prefix"),
             ({"WORKBENCH_CLUSTERS_INSTALL_PACKAGES": "perhaps"}, "install_packages"),
             ({"WORKBENCH_CLUSTERS_DATASTORE_MANAGERS": "redis=nocolon"}, "datastore_managers")]
    for env, option in cases:
        with pytest.raises(SettingsError) as info:
            Settings.load(env=env)
        assert info.value.fields["option"] == option
    bad = tmp_path / "bad.toml"
    bad.write_text("max_cluster_size = [")
    with pytest.raises(SettingsError) as info:
        Settings.load(bad, env={})
    assert info.value.fields["option"] == "config"
    bad.write_text("colour = 'blue'\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(bad, env={})
    assert info.value.fields["option"] == "colour"
    with pytest.raises(SettingsError):
        Settings.load(tmp_path / "missing.toml", env={})
