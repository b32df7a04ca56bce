"""Configuration of workbench.clusters: defaults, a TOML file, then ``WORKBENCH_CLUSTERS_*`` variables.

The options are the seed's (``DTROVE_MAX_CLUSTER_SIZE``, ``DTROVE_PREFIX``, ``DTROVE_PROVIDER``,
``DTROVE_SSH_USER``, ``DTROVE_DATASTORE_MANAGERS``, ``OS_*``) plus what running without Django needs
(state and instance directories, the master key, the static host pool, SSH timeouts)::

    # clusters.toml
    max_cluster_size = 5
    command_prefix = "sudo "
    provider = "static"
    ssh_user = "root"

    [[static_hosts]]
    address = "10.0.0.5"
    ssh_port = 22
    key_file = "/etc/workbench/pool_ed25519"
    host_key = "ssh-ed25519 AAAAC3..."
    base_dir = "/srv/workbench"

Every scalar option can also be set as ``WORKBENCH_CLUSTERS_<OPTION>`` (e.g.
``WORKBENCH_CLUSTERS_MAX_CLUSTER_SIZE=7``); the variable wins over the file. The file is the one
given to :meth:`Settings.load`, else ``$WORKBENCH_CLUSTERS_CONFIG``, else none.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from workbench.clusters.errors import SettingsError

log = logging.getLogger(__name__)

#: options that are secrets: a settings file holding one should be readable by its owner alone
SECRET_OPTIONS = ("master_key", "os_password")

ENV_PREFIX = "WORKBENCH_CLUSTERS_"

#: manager name -> "module:Class" of its BaseManager subclass (the seed's DTROVE_DATASTORE_MANAGERS)
DEFAULT_MANAGERS: dict[str, str] = {
    "mysql": "workbench.clusters.managers.mysql:MySQLManager",
    "redis": "workbench.clusters.managers.redis:RedisManager",
    "postgresql": "workbench.clusters.managers.postgresql:PostgresManager",
}

#: provider name -> "module:Class" of its BaseProvider subclass (the seed's DTROVE_PROVIDER)
DEFAULT_PROVIDERS: dict[str, str] = {
    "local": "workbench.clusters.providers.local:LocalProvider",
    "static": "workbench.clusters.providers.static:StaticHostsProvider",
    "openstack": "workbench.clusters.providers.openstack:OpenStackProvider",
}


@dataclass(frozen=True)
class StaticHost:
    """One existing machine of the static-hosts pool, reached over SSH with key authentication.

    ``host_key`` is its public host key as one ``"type base64"`` line: the pool vouches for it,
    so connections pin it and refuse any other. Several entries may name the same sshd with
    different ``base_dir`` (instances are directories below it).
    """

    address: str
    base_dir: str
    key_file: str
    host_key: str
    ssh_port: int = 22
    user: str = "root"
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.address}:{self.ssh_port}{self.base_dir}"


@dataclass(frozen=True)
class Settings:
    """Every option of workbench.clusters, validated on construction (``SettingsError`` with ``option``)."""

    #: most nodes one cluster may have (seed: DTROVE_MAX_CLUSTER_SIZE)
    max_cluster_size: int = 5
    #: put before every remote command, e.g. ``"sudo "``; ``%(name)s``-style fields of the instance
    #: (name, server, addr, port, directory) are filled in shell-quoted (seed: DTROVE_PREFIX)
    command_prefix: str = ""
    #: name of the provider in ``providers`` (seed: DTROVE_PROVIDER)
    provider: str = "local"
    #: default login of new servers (seed: DTROVE_SSH_USER)
    ssh_user: str = "root"
    #: manager name -> "module:Class" (seed: DTROVE_DATASTORE_MANAGERS)
    datastore_managers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MANAGERS))
    providers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PROVIDERS))
    #: where the SQLite database, master key, known_hosts and backups live by default
    state_dir: str = str(Path("~/.workbench/clusters").expanduser())
    #: root of the local provider's instance directories; database servers running as their own
    #: users (mysql, postgres) must be able to enter it, so it is not below a private home
    instances_dir: str = f"/var/tmp/workbench-clusters-{os.getuid()}"
    #: backups fetched from instances land here (default: <state_dir>/backups)
    backup_dir: str = ""
    #: SQLAlchemy URL of the state database (default: SQLite <state_dir>/clusters.db)
    database_url: str = ""
    #: passphrase that encrypts private keys and cluster secrets at rest; when empty a random one
    #: is kept in <state_dir>/master.key (mode 0600)
    master_key: str = ""
    #: known_hosts file of SSH connections (default: <state_dir>/known_hosts)
    known_hosts: str = ""
    ssh_timeout: float = 15.0
    command_timeout: float = 600.0
    #: attempts of steps that are safe to repeat (connecting, waiting for a server, verifying)
    task_retries: int = 2
    #: instances of one cluster prepared at the same time
    parallel_instances: int = 8
    #: may prepare() install missing packages through the host's package manager?
    install_packages: bool = True
    #: give every instance a volume of ``volume_size_gb`` for its data (when the provider supports volumes)
    use_volumes: bool = False
    volume_size_gb: int = 1
    static_hosts: tuple[StaticHost, ...] = ()
    # OpenStack (seed: OS_*)
    os_auth_url: str = "http://0.0.0.0:5000/v2.0"
    os_username: str = ""
    os_password: str = ""
    os_project_id: str = ""
    os_nova_bypass_url: str = ""
    os_nova_endpoint_type: str = "publicURL"
    os_cinder_bypass_url: str = ""
    os_flavor: str = ""
    os_network: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.max_cluster_size, int) or self.max_cluster_size < 1:
            raise SettingsError("max_cluster_size must be a whole number >= 1", option="max_cluster_size",
                                value=self.max_cluster_size)
        if self.provider not in self.providers:
            raise SettingsError(f"unknown provider {self.provider!r}; known: {', '.join(sorted(self.providers))}",
                                option="provider", value=self.provider)
        for option in ("datastore_managers", "providers"):
            for name, path in getattr(self, option).items():
                if ":" not in str(path):
                    raise SettingsError(f"{option}[{name!r}] must be 'module:Class'", option=option, value=path)
        for option in ("ssh_timeout", "command_timeout"):
            if getattr(self, option) <= 0:
                raise SettingsError(f"{option} must be > 0", option=option, value=getattr(self, option))
        if self.task_retries < 0 or self.parallel_instances < 1:
            raise SettingsError("task_retries must be >= 0 and parallel_instances >= 1",
                                option="task_retries" if self.task_retries < 0 else "parallel_instances")
        if self.command_prefix and not self.command_prefix.endswith(" "):
            # "sudo" + "ls" would run "sudols": the seed's examples all end in a space
            raise SettingsError("command_prefix must end with a space, e.g. 'sudo '", option="command_prefix",
                                value=self.command_prefix)
        if not self.ssh_user:
            raise SettingsError("ssh_user must not be empty", option="ssh_user")
        # user names and directories reach remote command lines as words: none may read as an option
        for option, user in (("ssh_user", self.ssh_user), *(("static_hosts", h.user) for h in self.static_hosts)):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", str(user)):
                raise SettingsError(f"{option}: {user!r} is not a user name (a letter or '_', then letters, "
                                    "digits, '_', '.', '-')", option=option, value=user)
        for option, directory in (("instances_dir", self.instances_dir),
                                  *(("static_hosts", h.base_dir) for h in self.static_hosts)):
            if not str(directory).startswith("/") or any(ord(c) < 32 for c in str(directory)):
                raise SettingsError(f"{option}: {directory!r} must be an absolute path", option=option,
                                    value=directory)

    # -- derived paths --------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    @property
    def backup_path(self) -> Path:
        return Path(self.backup_dir).expanduser() if self.backup_dir else self.state_path / "backups"

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts).expanduser() if self.known_hosts else self.state_path / "known_hosts"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_path / 'clusters.db'}"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
             **overrides: Any) -> Settings:
        """Defaults, then the TOML file, then ``WORKBENCH_CLUSTERS_*`` variables, then ``overrides``.

        ::

            >>> Settings.load(env={"WORKBENCH_CLUSTERS_MAX_CLUSTER_SIZE": "3"}).max_cluster_size
            3
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = path or env.get(ENV_PREFIX + "CONFIG")
        if path:
            values.update(_read_toml(Path(path)))
        values.update(_read_env(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from plain values (as in TOML), converting and checking each one."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise SettingsError(f"unknown option(s): {', '.join(unknown)}", option=unknown[0])
        converted: dict[str, Any] = {}
        for name, value in values.items():
            converted[name] = _convert(name, fields[name], value)
        return cls(**converted)


def _convert(name: str, spec: dataclasses.Field[Any], value: Any) -> Any:
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "")
    try:
        if name == "static_hosts":
            return tuple(host if isinstance(host, StaticHost) else StaticHost(**host) for host in value)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if name in ("datastore_managers", "providers"):
            if isinstance(value, str):  # "name=module:Class,name2=..." from an environment variable
                value = dict(item.split("=", 1) for item in value.split(",") if item.strip())
            return {str(k).strip(): str(v).strip() for k, v in dict(value).items()}
        if kind == "str":
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"option {name} has a bad value {value!r} ({kind} expected)", option=name,
                            value=value) from exc
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist", option="config", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}", option="config",
                            path=str(path)) from None
    # a file may keep its options under [clusters] so one TOML can configure several subsystems
    values = dict(data.get("clusters", data))
    secrets = [name for name in SECRET_OPTIONS if values.get(name)]
    mode = path.stat().st_mode & 0o777
    if secrets and mode & 0o077:
        log.warning("settings file %s holds %s but other users may read it (mode %04o): chmod 0600 it, or set "
                    "%s instead", path, " and ".join(secrets), mode,
                    " / ".join(ENV_PREFIX + name.upper() for name in secrets))
    return values


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(Settings)} - {"static_hosts"}
    return {name: env[ENV_PREFIX + name.upper()] for name in names if ENV_PREFIX + name.upper() in env}


__all__ = ["Settings", "StaticHost", "DEFAULT_MANAGERS", "DEFAULT_PROVIDERS", "ENV_PREFIX"]
