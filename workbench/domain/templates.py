"""Database templates: the known classes of database a description names (no I/O).

A template turns a description's variables into the processes a database needs, as *slots*
(``sm1``, ``te1``, ``te2``...), and says how they are placed on peers. Three are built in:

* ``Single Host``: one storage manager and one transaction engine on one peer;
* ``Minimally Redundant``: two storage managers and ``TE_COUNT`` (default 2) transaction engines,
  each kind on distinct peers;
* ``Multi Host``: one storage manager and ``TE_COUNT`` transaction engines on distinct peers.

zdb has one primary per database, so a template's first storage manager (``sm1``) owns the
archive; any further storage manager is a standby that keeps a full, current copy of the data
on another peer by following the primary's change stream.

::

    template = find_template("Multi Host")
    template.slots(template.resolve({"TE_COUNT": "3"}))   # sm1, te1, te2, te3
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.domain.errors import DescriptionError
from workbench.domain.model import SM, TE

#: most transaction engines one description may ask for
MAX_TE_COUNT = 64


@dataclass(frozen=True)
class Slot:
    """One process a template asks for: ``name`` (``sm1``, ``te2``), its type, and whether it is a standby SM."""

    name: str
    type: str
    standby: bool = False


@dataclass(frozen=True)
class Template:
    """A class of database: ``name``, a one-line ``summary``, the ``requirements`` it puts on the domain.

    ``variables`` are the names a description may set, with their defaults; ``distinct_peers``
    puts processes of the same type on different peers; ``single_peer`` puts all of them on one.
    """

    name: str
    summary: str
    requirements: str
    variables: dict[str, str] = field(default_factory=dict)
    sm_count: int = 1
    te_count: int | str = 1  # a number, or the variable that holds it
    distinct_peers: bool = False
    single_peer: bool = False

    def resolve(self, variables: dict[str, str] | None) -> dict[str, str]:
        """The template's defaults overlaid with ``variables``; DescriptionError for anything that does not fit."""
        given = {str(k): str(v) for k, v in (variables or {}).items()}
        unknown = sorted(set(given) - set(self.variables))
        if unknown:
            raise DescriptionError(f"template {self.name!r} has no variable {', '.join(unknown)}",
                                   template=self.name, unknown=unknown, allowed=sorted(self.variables))
        resolved = {**self.variables, **given}
        if isinstance(self.te_count, str):
            value = resolved[self.te_count]
            if not value.isdigit() or not 1 <= int(value) <= MAX_TE_COUNT:
                raise DescriptionError(f"{self.te_count} must be a whole number from 1 to {MAX_TE_COUNT}",
                                       template=self.name, variable=self.te_count, value=value)
        return resolved

    def engines(self, variables: dict[str, str]) -> int:
        """How many transaction engines the (resolved) variables ask for."""
        return int(variables[self.te_count]) if isinstance(self.te_count, str) else self.te_count

    def slots(self, variables: dict[str, str]) -> list[Slot]:
        """The processes of a database built from this template: storage managers first."""
        storage = [Slot(f"sm{i}", SM, standby=i > 1) for i in range(1, self.sm_count + 1)]
        return storage + [Slot(f"te{i}", TE) for i in range(1, self.engines(variables) + 1)]

    def peers_needed(self, variables: dict[str, str]) -> int:
        """The fewest peers the domain must have for this template."""
        if self.single_peer:
            return 1
        if self.distinct_peers:
            return max(self.sm_count, self.engines(variables))
        return 1

    def __str__(self) -> str:
        return self.name


TEMPLATES: tuple[Template, ...] = (
    Template("Single Host", "1 storage manager and 1 transaction engine on one peer",
             "1 peer (HOST names it; default: the least busy peer)", {"HOST": ""}, sm_count=1, te_count=1,
             single_peer=True),
    Template("Minimally Redundant",
             "2 storage managers (the second a standby copy) and TE_COUNT transaction engines, each kind on "
             "distinct peers", "2 peers, or TE_COUNT when more (default 2)", {"TE_COUNT": "2"}, sm_count=2,
             te_count="TE_COUNT", distinct_peers=True),
    Template("Multi Host", "1 storage manager and TE_COUNT transaction engines on distinct peers",
             "TE_COUNT peers (default 2)", {"TE_COUNT": "2"}, sm_count=1, te_count="TE_COUNT",
             distinct_peers=True),
)


def find_template(name: str) -> Template:
    """The built-in template called ``name``; DescriptionError naming the known ones otherwise."""
    for template in TEMPLATES:
        if template.name == name:
            return template
    raise DescriptionError(f"no template named {name!r}", template=name,
                           known=[template.name for template in TEMPLATES])
