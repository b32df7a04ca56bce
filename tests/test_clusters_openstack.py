"""The OpenStack provider against the HTTP stand-in of Keystone v3, Nova, Cinder and Glance."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.clusters.errors import ProviderError
from workbench.clusters.models import ClusterStore
from workbench.clusters.providers import get_provider
from workbench.clusters.providers.openstack import OpenStackProvider, host_key_from_console, server_address
from workbench.clusters.settings import Settings
from workbench.events import EventRecorder
from workbench.testing.openstack import OpenStackStandIn

FAULT = "No valid host was found. There are not enough hosts available."


@pytest.fixture
def cloud():
    with OpenStackStandIn(password="cloud-pw", build_polls=3) as stand_in:
        yield stand_in


def cloud_settings(cloud: OpenStackStandIn, tmp_path, **changes) -> Settings:
    options = dict(provider="openstack", os_auth_url=cloud.auth_url, os_username=cloud.username,
                   os_password=cloud.password, os_project_id=cloud.project_id, os_flavor="m1.small",
                   master_key="test-master", state_dir=str(tmp_path / "state"))
    options.update(changes)
    return Settings(**options)


@pytest.fixture
def settings(cloud, tmp_path):
    return cloud_settings(cloud, tmp_path)


@pytest.fixture
def store(settings, tmp_path):
    with ClusterStore(f"sqlite:///{tmp_path / 'clusters.db'}", settings) as opened:
        opened.add_datastore("redis", "7", image="debian-12")
        opened.add_datastore("mysql", "8", image="ubuntu-22.04")
        yield opened


def make_provider(settings, store, **options) -> OpenStackProvider:
    options = {"poll_interval": 0.01, "build_timeout": 10, "delete_timeout": 10, "volume_timeout": 10,
               "request_timeout": 5, **options}
    return OpenStackProvider(settings, store, **options)


@pytest.fixture
def provider(settings, store):
    made = make_provider(settings, store)
    yield made
    made.close()


def new_instance(store: ClusterStore, name: str = "cache", datastore: str = "redis-7", size: int = 1):
    cluster = store.create_cluster(name, datastore, size=size, provider="openstack")
    return store.get_instance(cluster.instances[0].id)


# -- create -------------------------------------------------------------------------------------
def test_create_boots_with_the_cluster_key_and_polls_to_active(cloud, store, provider):
    recorder = EventRecorder()
    store.add_listener(recorder)
    instance = new_instance(store)
    provider.create(instance)

    server = cloud.servers[instance.server]
    assert (server.status, server.name, server.flavor_id) == ("ACTIVE", "cache-1", "2")
    assert server.image_id == cloud.image_id("debian-12")
    key = store.get_cluster("cache").key
    assert server.key_name == key.name and cloud.keypairs[key.name] == key.public
    assert server.metadata == {"workbench-cluster": "cache", "workbench-instance": "cache-1",
                               "workbench-role": "primary"}
    # what was learned is stored, not only set on the object
    stored = store.get_instance(instance.id)
    assert (stored.addr, stored.ssh_host, stored.ssh_port, stored.port) == (server.addr, server.addr, 22, 6379)
    assert stored.server_status == "ACTIVE" and stored.progress == 30
    assert stored.host_key == server.host_key  # vouched for from the console log
    assert stored.directory == "/var/lib/workbench/cache-1" and stored.user == "root"
    # the progress moved as the server was polled (Nova's 33%, 66% scaled into the build's share
    # of the bar, 5-30), and each step was an event
    store.flush_events()
    progress = [e.args[0].progress for e in recorder.events
                if e.kind == "instance_changed" and e.args[0].name == "cache-1"]
    assert progress == [5, 13, 21, 30]
    gets = [p for m, p in cloud.requests if m == "GET" and p.endswith(f"/servers/{instance.server}")]
    assert len(gets) == 3


def test_a_server_that_goes_to_error_raises_the_fault_message_and_destroy_cleans_up(cloud, store, provider):
    cloud.fail_builds(FAULT, image="debian-12")
    instance = new_instance(store)
    with pytest.raises(ProviderError, match="No valid host was found") as failure:
        provider.create(instance)
    assert failure.value.fault == FAULT and failure.value.server == instance.server
    stored = store.get_instance(instance.id)
    assert (stored.server_status, stored.message, stored.server) == ("ERROR", FAULT, instance.server)
    assert provider.update_status(stored) == ("ERROR", 0)
    provider.destroy(stored)
    assert cloud.live_servers() == [] and cloud.servers == {}
    assert store.get_instance(instance.id).server_status == "DELETED"


def test_only_matching_builds_fail(cloud, store, provider):
    cloud.fail_builds(FAULT, name=r"bad-\d+")
    good, bad = new_instance(store, "good"), new_instance(store, "bad")
    provider.create(good)
    with pytest.raises(ProviderError, match="went to ERROR"):
        provider.create(bad)
    assert cloud.servers[good.server].status == "ACTIVE" and cloud.servers[bad.server].status == "ERROR"


def test_a_build_that_never_ends_times_out_with_a_clear_error(cloud, store, settings):
    cloud.build_polls = None
    provider = make_provider(settings, store, build_timeout=0.3)
    instance = new_instance(store)
    with pytest.raises(ProviderError, match=r"gave up waiting for server .* to become ACTIVE after 0.3s") as failure:
        provider.create(instance)
    assert failure.value.server == instance.server and failure.value.timeout == 0.3
    provider.destroy(store.get_instance(instance.id))
    assert cloud.servers == {}


def test_quota_and_bad_requests_are_provider_errors_with_the_clouds_message(cloud, store, provider):
    cloud.max_servers = 1
    provider.create(new_instance(store, "one"))
    with pytest.raises(ProviderError, match="Quota exceeded for instances") as failure:
        provider.create(new_instance(store, "two"))
    assert failure.value.status == 403 and failure.value.method == "POST" and failure.value.path == "/servers"
    assert len(cloud.servers) == 1


def test_unknown_flavor_or_image_fails_before_anything_is_booted(cloud, store, settings):
    provider = make_provider(settings.replace(os_flavor="m9.huge"), store)
    with pytest.raises(ProviderError, match="no flavor 'm9.huge'"):
        provider.create(new_instance(store))
    store.add_datastore("postgresql", "15", image="no-such-image")
    with pytest.raises(ProviderError, match="no active image named 'no-such-image'"):
        make_provider(settings, store).create(new_instance(store, "pg", "postgresql-15"))
    assert cloud.servers == {}


def test_an_existing_different_keypair_of_the_same_name_is_refused(cloud, store, provider):
    instance = new_instance(store)
    cloud.keypairs[instance.cluster.key.name] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther other"
    with pytest.raises(ProviderError, match="different key pair"):
        provider.create(instance)
    assert cloud.servers == {}


# -- credentials and reachability -----------------------------------------------------------------
def test_bad_credentials_are_a_401_provider_error_and_nothing_is_booted(cloud, store, settings):
    provider = make_provider(settings.replace(os_password="wrong"), store)
    with pytest.raises(ProviderError, match="refused the credentials of user 'workbench'") as failure:
        provider.create(new_instance(store))
    assert failure.value.status == 401
    assert "wrong" not in str(failure.value) and cloud.password not in str(failure.value)
    assert cloud.servers == {} and cloud.keypairs == {}


def test_a_revoked_token_is_replaced_transparently(cloud, store, provider):
    assert provider.flavors()
    assert cloud.token_requests == 1
    cloud.revoke_tokens()
    provider.create(new_instance(store))
    assert cloud.token_requests == 2


def test_missing_options_and_keystone_v2_urls_are_clear(store, settings):
    with pytest.raises(ProviderError, match="needs os_password") as failure:
        make_provider(settings.replace(os_password=""), store).flavors()
    assert failure.value.option == "os_password"
    with pytest.raises(ProviderError, match="Keystone v2.0 is retired"):
        make_provider(settings.replace(os_auth_url="http://127.0.0.1:5000/v2.0"), store).flavors()


def test_an_unreachable_cloud_is_a_provider_error(cloud, store, settings):
    cloud.stop()
    with pytest.raises(ProviderError, match="cannot reach OpenStack compute"):
        make_provider(settings, store).flavors()


# -- status, flavors, snapshots -------------------------------------------------------------------
def test_update_status_follows_the_server(cloud, store, provider):
    instance = new_instance(store)
    provider.create(instance)
    assert provider.update_status(instance) == ("ACTIVE", 100)
    del cloud.servers[instance.server]  # deleted behind our back
    assert provider.update_status(instance) == ("DELETED", 0)
    assert "no longer exists" in store.get_instance(instance.id).message


def test_flavors_and_the_datastore_filter(provider):
    every = provider.flavors()
    assert [f["name"] for f in every] == ["m1.tiny", "m1.small", "m1.medium"]
    assert every[0] == {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}
    assert [f["name"] for f in provider.flavors("mysql - 8")] == ["m1.small", "m1.medium"]
    assert [f["name"] for f in provider.flavors("redis-7")] == ["m1.tiny", "m1.small", "m1.medium"]


def test_snapshot_waits_for_the_image_to_be_active(cloud, store, provider):
    instance = new_instance(store)
    provider.create(instance)
    image_id = provider.snapshot(instance)
    image = cloud.images[image_id]
    assert (image.status, image.server_id) == ("active", instance.server)
    assert image.name.startswith("cache-1-")
    assert provider.supports_snapshots and provider.supports_volumes


# -- volumes ----------------------------------------------------------------------------------------
def test_attach_volume_creates_attaches_and_destroy_deletes_it(cloud, store, provider):
    instance = new_instance(store)
    provider.create(instance)
    volume_id = provider.attach_volume(instance)
    volume = cloud.volumes[volume_id]
    assert (volume.status, volume.server_id, volume.device) == ("in-use", instance.server, "/dev/vdb")
    assert cloud.servers[instance.server].attachments == {volume_id: "/dev/vdb"}
    assert store.get_instance(instance.id).volume == volume_id
    assert provider.volume_device(instance) == "/dev/vdb"
    provider.destroy(instance)
    assert cloud.servers == {} and cloud.volumes == {}
    assert store.get_instance(instance.id).volume == ""


def test_attach_an_existing_volume(cloud, store, provider):
    instance = new_instance(store)
    provider.create(instance)
    volume_id = provider.create_volume(instance, size_gb=5)
    assert cloud.volumes[volume_id].status == "available" and cloud.volumes[volume_id].size == 5
    assert provider.attach_volume(instance, volume_id) == volume_id
    assert cloud.volumes[volume_id].status == "in-use"


def test_a_volume_that_fails_to_build_is_an_error_with_its_status(cloud, store, provider):
    cloud.max_volume_gb = 2
    instance = new_instance(store)
    provider.create(instance)
    with pytest.raises(ProviderError, match="went to error") as failure:
        provider.create_volume(instance, size_gb=3)
    assert failure.value.status == "error"
    # recorded as soon as made, so the cleanup finds it
    assert store.get_instance(instance.id).volume == failure.value.volume
    provider.destroy(store.get_instance(instance.id))
    assert cloud.volumes == {}


def test_attaching_to_an_instance_without_server_is_refused(store, provider, cloud):
    with pytest.raises(ProviderError, match="has no server"):
        provider.attach_volume(new_instance(store))
    assert cloud.volumes == {}


# -- wiring and parsing -------------------------------------------------------------------------------
def test_get_provider_builds_the_openstack_provider_from_settings(settings, store):
    provider = get_provider(settings, store=store)
    assert isinstance(provider, OpenStackProvider) and provider.store is store
    assert provider.interface == "public"


def test_host_key_and_address_parsing():
    console = ("noise\n-----BEGIN SSH HOST KEY KEYS-----\nssh-rsa AAAArsa root@x\n"
               "ssh-ed25519 AAAAed root@x\n-----END SSH HOST KEY KEYS-----\n")
    assert host_key_from_console(console) == "ssh-ed25519 AAAAed"
    assert host_key_from_console("no keys here") == ""
    server = {"addresses": {"net": [{"addr": "fd00::5", "version": 6},
                                    {"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
                                    {"addr": "203.0.113.9", "version": 4, "OS-EXT-IPS:type": "floating"}]}}
    assert server_address(server) == "203.0.113.9"
    assert server_address({"accessIPv4": "198.51.100.1", **server}) == "198.51.100.1"
    assert server_address({"addresses": {}}) == ""


# -- through the task runner -----------------------------------------------------------------------
def test_a_cluster_whose_server_fails_ends_in_error_with_the_fault_and_no_server_left(cloud, store):
    from workbench.clusters.tasks import TaskRunner

    # one poll to the end of a build and of a deletion: the provider's default 2 s poll never sleeps
    cloud.build_polls, cloud.delete_polls = 1, 0
    cloud.fail_builds(FAULT, name="cache-2")
    with TaskRunner(store) as runner:
        handle = runner.create_cluster("cache", "redis-7", size=3, provider="openstack")
        with pytest.raises(ProviderError, match="No valid host was found"):
            handle.wait(timeout=60)
    cluster = store.get_cluster("cache")
    assert cluster.status == "error" and FAULT in cluster.message and "cache-2" in cluster.message
    failed = store.get_instance("cache-2")
    assert failed.status == "error" and FAULT in failed.message
    assert all(i.status == "error" and i.server == "" for i in cluster.instances)
    # every server the create booted (the two that came up and the one that failed) is deleted
    assert len(cloud.keypairs) == 1 and cloud.servers == {}
    deletes = [p for m, p in cloud.requests if m == "DELETE"]
    assert len(deletes) == 3


def test_with_volumes_a_failed_build_deletes_the_volume_it_made_too(cloud, settings, tmp_path):
    from workbench.clusters.tasks import TaskRunner

    cloud.build_polls, cloud.delete_polls, cloud.volume_polls = 1, 0, 1
    cloud.fail_builds(FAULT)
    with ClusterStore(f"sqlite:///{tmp_path / 'volumes.db'}", settings.replace(use_volumes=True)) as store:
        store.add_datastore("redis", "7", image="debian-12")
        with TaskRunner(store) as runner:
            with pytest.raises(ProviderError, match="No valid host was found"):
                runner.create_cluster("cache", "redis-7", size=1, provider="openstack").wait(timeout=60)
        assert len([p for m, p in cloud.requests if m == "POST" and p.endswith("/volumes")]) == 1
        assert cloud.volumes == {} and cloud.servers == {}
        instance = store.get_cluster("cache").instances[0]
        assert (instance.status, instance.volume, instance.server) == ("error", "", "")


def test_ssh_trusts_exactly_the_host_key_the_servers_console_shows(cloud, store, settings, ssh_server):
    """Servers put on a real sshd: the key cloud-init printed is pinned; another key is refused."""
    import paramiko

    from workbench.clusters.errors import UnknownHostKeyError
    from workbench.testing.openstack import new_host_key_line

    real_key = " ".join(Path(f"{ssh_server.host_key_path}.pub").read_text().split()[:2])
    impostor = new_host_key_line()
    cloud.addresses = lambda index: ssh_server.host
    cloud.host_keys = lambda index: real_key if index == 0 else impostor
    provider = make_provider(settings.replace(ssh_user=ssh_server.username), store, ssh_port=ssh_server.port)
    login = paramiko.Ed25519Key.from_private_key_file(str(ssh_server.client_key_path))

    good = new_instance(store, "good")
    provider.create(good)
    assert (good.host_key, good.ssh_host, good.ssh_port) == (real_key, ssh_server.host, ssh_server.port)
    with provider.connect(good, login) as conn:
        assert conn.run(["echo", "reached", "over", "ssh"]).stdout == "reached over ssh\n"

    # the console of this one shows another key than the host answering at its address
    bad = new_instance(store, "bad")
    provider.create(bad)
    assert bad.host_key == impostor
    with pytest.raises(UnknownHostKeyError):
        with provider.connect(bad, login) as conn:
            conn.run(["true"])
