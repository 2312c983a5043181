"""The Part protocol: what every shared structure of a system offers, whoever built it.

A system is a root segment plus named parts (shm/system.py). Each structure that lives in parts --
the L1 table and its arena, the write-behind journal, the embedding log, the topics, the locks, the
consensus state -- is one class, in the module above ``shm/`` that runs it, and that class owns its
layout (the ``shm/*_layout.py`` it uses) and offers:

- ``PARTS``: the names of the segments it owns;
- ``part_specs(config, store)``: the :class:`PartSpec` of each, for ``System.create`` (a spec's
  ``settings`` are recorded in the system's config, which attachers read back);
- ``attach(system)``: a view over an attached system; it validates every header it reads against
  its layout and needs nothing but shared memory, so an observer (``nt-memory top``, ``inspect``)
  may call it;
- ``stats()``: counters and fill levels, a flat-ish ``dict`` of numbers and short strings, for
  ``MemorySystem.stats`` and the CLI;
- ``verify()``: a full consistency check of the shared words (``[]`` when sound, else one line per
  problem), as diskcache's ``check()``; it never writes;
- ``close()``: drop the view; safe to call twice and on a half-built object.

Adding a structure means a layout module in ``shm/`` and one class above it that offers these.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from nt_memory.shm.system import PartSpec, System


@runtime_checkable
class Part(Protocol):
    PARTS: tuple[str, ...]  # the names of the segments it owns (a class attribute)

    @classmethod
    def part_specs(cls, config: Any, store: Any, /) -> list[PartSpec]: ...

    @classmethod
    def attach(cls, system: System, /) -> Part: ...

    def stats(self) -> dict: ...

    def verify(self) -> list[str]: ...

    def close(self) -> None: ...
