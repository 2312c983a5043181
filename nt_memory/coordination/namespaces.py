"""Agent namespaces: ``swarm/<agent-id>/<key>`` keys, and a view that cannot leave its namespace.

``mem.namespace("agent_7")`` stores under the namespace ``swarm/agent_7``. Keys are separate from
the namespace in the stored form (``namespace \\0 key``), so no key, whatever its characters, can
address another agent's entries through a view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from nt_memory.errors import ConfigError
from nt_memory.values import Duration, Key, Value

AGENT_RE = re.compile(r"^[A-Za-z0-9_\-.]{1,48}$")
SWARM = "swarm"


def validate_agent_id(agent_id: object) -> str:
    if not isinstance(agent_id, str) or not AGENT_RE.match(agent_id):
        raise ConfigError(f"agent_id={agent_id!r} must be 1 to 48 characters from A-Z a-z 0-9 _ - .")
    return agent_id


def agent_namespace(agent_id: str) -> str:
    """The namespace of an agent: ``swarm/<agent-id>``."""
    return f"{SWARM}/{validate_agent_id(agent_id)}"


def swarm_key(agent_id: str, key: str) -> str:
    """The seed's flat form ``swarm/<agent-id>/<key>`` (for topics and logs)."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"key={key!r} must be a non-empty str")
    return f"{agent_namespace(agent_id)}/{key}"


def parse_swarm_key(flat: str) -> tuple[str, str]:
    """``swarm/<agent-id>/<key>`` -> (agent id, key)."""
    parts = flat.split("/", 2) if isinstance(flat, str) else []
    if len(parts) != 3 or parts[0] != SWARM or not parts[2]:
        raise ConfigError(f"{flat!r} is not of the form swarm/<agent-id>/<key>")
    return validate_agent_id(parts[1]), parts[2]


class NamespaceView:
    """An agent's view of a memory system: every key lives under ``swarm/<agent-id>``."""

    def __init__(self, mem: Any, agent_id: str):
        self._mem = mem
        self.agent_id = validate_agent_id(agent_id)
        self.namespace = agent_namespace(agent_id)

    def put(self, key: Key, value: Value, ttl: Duration | None = None, embedding: Any = None) -> None:
        self._mem.put(self.namespace, key, value, ttl=ttl, embedding=embedding)

    def put_many(self, items: Any, ttl: Duration | None = None, embeddings: Any = None) -> int:
        return self._mem.put_many(self.namespace, items, ttl=ttl, embeddings=embeddings)

    def get(self, key: Key, default: Any = None) -> Any:
        return self._mem.get(self.namespace, key, default)

    def get_many(self, keys: Iterable[Key], default: Any = None) -> list[Any]:
        return self._mem.get_many(self.namespace, keys, default)

    def delete(self, key: Key) -> None:
        self._mem.delete(self.namespace, key)

    def exists(self, key: Key) -> bool:
        return self._mem.exists(self.namespace, key)

    def __contains__(self, key: Key) -> bool:
        return self._mem.exists(self.namespace, key)

    def ttl(self, key: Key) -> float | None:
        return self._mem.ttl(self.namespace, key)

    def expire(self, key: Key, ttl: Duration | None) -> bool:
        return self._mem.expire(self.namespace, key, ttl)

    def incr(self, key: Key, amount: int = 1) -> int:
        return self._mem.incr(self.namespace, key, amount)

    def compare_and_set(self, key: Key, expected: Value | None, new: Value, ttl: Duration | None = None) -> bool:
        return self._mem.compare_and_set(self.namespace, key, expected, new, ttl)

    def keys(self) -> list[str]:
        return self._mem.keys(self.namespace)

    def scan(self, prefix: str = "") -> Iterator[str]:
        return self._mem.scan(self.namespace, prefix)

    def __len__(self) -> int:
        return self._mem.count(self.namespace)

    def search_similar(self, query: Any, top_k: int = 10, **kw: Any) -> Any:
        return self._mem.search_similar(self.namespace, query, top_k=top_k, **kw)

    def search_similar_many(self, queries: Any, top_k: int = 10, **kw: Any) -> Any:
        return self._mem.search_similar_many(self.namespace, queries, top_k=top_k, **kw)

    def __repr__(self) -> str:
        return f"<NamespaceView {self.namespace!r}>"
