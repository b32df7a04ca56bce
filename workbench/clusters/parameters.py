"""The configuration parameters each datastore manager accepts (no I/O): their types, bounds, whether a
change needs a restart, and the check of a configuration's values against them.

A configuration group (Trove's name; :class:`~workbench.clusters.models.Configuration`) holds values
of these parameters; the manager renders them at the end of the datastore's config file, after the
template's own lines, so they win, and applies a change to the running server (``SET GLOBAL``,
``CONFIG SET``, a reload) unless the parameter needs a restart::

    check_values("redis", {"maxmemory": 104857600})      # {"maxmemory": 104857600}
    check_values("redis", {"save": "60 1"})              # ValidationError: not a parameter of redis
    PARAMETERS["mysql"]["max_connections"].restart_required   # False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.clusters.errors import ValidationError

INTEGER, STRING, BOOLEAN = "integer", "string", "boolean"


@dataclass(frozen=True)
class Parameter:
    """One parameter: ``type`` integer, string or boolean; ``min``/``max`` for integers; ``choices``
    for strings (none may be free text: every value ends up in a config file and a command)."""

    name: str
    type: str
    min: int | None = None
    max: int | None = None
    restart_required: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        """``value`` if it fits this parameter (a boolean also as 0/1, "on"/"off"), else ``ValidationError``."""
        if self.type == BOOLEAN:
            if isinstance(value, bool):
                return value
            if value in (0, 1) or (isinstance(value, str) and value.lower() in ("on", "off", "true", "false")):
                return value in (1,) or (isinstance(value, str) and value.lower() in ("on", "true"))
            raise ValidationError(f"{self.name} must be true or false", field=self.name, value=value)
        if self.type == INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{self.name} must be a whole number", field=self.name, value=value)
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ValidationError(f"{self.name} must be between {self.min} and {self.max}", field=self.name,
                                      value=value, min=self.min, max=self.max)
            return value
        if not isinstance(value, str) or value not in self.choices:
            raise ValidationError(f"{self.name} must be one of {', '.join(self.choices)}", field=self.name,
                                  value=value)
        return value


def _table(*parameters: Parameter) -> dict[str, Parameter]:
    return {p.name: p for p in parameters}


#: manager name -> the parameters a configuration group may set for it
PARAMETERS: dict[str, dict[str, Parameter]] = {
    "mysql": _table(
        Parameter("max_connections", INTEGER, 1, 100000),
        Parameter("max_allowed_packet", INTEGER, 1024, 1073741824),
        Parameter("wait_timeout", INTEGER, 1, 31536000),
        Parameter("connect_timeout", INTEGER, 2, 31536000),
        Parameter("sort_buffer_size", INTEGER, 32768, 1073741824),
        Parameter("innodb_buffer_pool_size", INTEGER, 5242880, 68719476736),
        Parameter("long_query_time", INTEGER, 0, 31536000),
        Parameter("slow_query_log", BOOLEAN),
        Parameter("performance_schema", BOOLEAN, restart_required=True),
    ),
    "redis": _table(
        Parameter("maxmemory", INTEGER, 0, 1 << 40),
        Parameter("maxmemory-policy", STRING, choices=("noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
                                                       "volatile-lru", "volatile-lfu", "volatile-random",
                                                       "volatile-ttl")),
        Parameter("timeout", INTEGER, 0, 31536000),
        Parameter("maxclients", INTEGER, 1, 100000),
        Parameter("databases", INTEGER, 1, 1024, restart_required=True),
    ),
    "postgresql": _table(
        Parameter("max_connections", INTEGER, 5, 10000, restart_required=True),
        Parameter("work_mem", INTEGER, 64, 2147483647),  # kB
        Parameter("maintenance_work_mem", INTEGER, 1024, 2147483647),  # kB
        Parameter("statement_timeout", INTEGER, 0, 2147483647),  # ms
        Parameter("shared_buffers", INTEGER, 16, 1073741823, restart_required=True),  # 8 kB blocks
        Parameter("log_min_duration_statement", INTEGER, -1, 2147483647),  # ms
    ),
}


def parameters_of(manager: str) -> dict[str, Parameter]:
    """The parameters of datastore ``manager`` (none for a manager without a table)."""
    return PARAMETERS.get(manager, {})


def check_values(manager: str, values: Any) -> dict[str, Any]:
    """``values`` (an object: parameter -> value) checked against ``manager``'s parameters, every
    problem reported at once (``ValidationError`` with ``fields``)."""
    if not isinstance(values, dict):
        raise ValidationError("values must be an object of parameter names and values", field="values")
    known = parameters_of(manager)
    checked: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, value in values.items():
        parameter = known.get(name)
        if parameter is None:
            problems[name] = f"The configuration parameter {name} is not supported for datastore {manager}."
            continue
        try:
            checked[name] = parameter.check(value)
        except ValidationError as exc:
            problems[name] = exc.message
    if problems:
        raise ValidationError("; ".join(problems.values()), field=next(iter(problems)), fields=problems)
    return checked


def needs_restart(manager: str, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether going from values ``before`` to ``after`` needs a restart: a changed parameter that
    requires one, or one no longer set (the server's value goes back to the config file's)."""
    known = parameters_of(manager)
    if any(name not in after for name in before):
        return True
    return any(known[name].restart_required for name, value in after.items()
               if name in known and before.get(name) != value)


__all__ = ["Parameter", "PARAMETERS", "parameters_of", "check_values", "needs_restart", "INTEGER", "STRING",
           "BOOLEAN"]
