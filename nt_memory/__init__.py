"""nt-memory: a shared-memory, zero-copy memory engine for co-located agent processes."""

import importlib
from typing import TYPE_CHECKING

from nt_memory.errors import (
    CapacityError,
    ClusterError,
    CodecError,
    ConfigError,
    ConsensusError,
    CorruptSegment,
    InvalidEmbedding,
    InvalidKey,
    LayoutMismatch,
    LockTimeout,
    NtMemoryError,
    SegmentClosed,
    SegmentError,
    SegmentExists,
    SegmentNotFound,
    SegmentNotOwned,
    StaleToken,
    SystemAbandoned,
    TierError,
    ValueTooLarge,
)

# The errors are imported at once (they import nothing). Every other public name is imported from
# its module on first use (PEP 562): ``import nt_memory`` and the command line's ``ls`` and
# ``--version`` stay cheap, and ``from nt_memory import MemorySystem`` loads what it needs. The
# type checker reads the imports below instead.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["CacheConfig", "ClusterConfig", "MemoryConfig"], "nt_memory.config"),
    **dict.fromkeys(["ConsensusResult", "ConsensusStatus", "Proposal", "Vote"], "nt_memory.coordination.consensus"),
    **dict.fromkeys(["LockToken"], "nt_memory.coordination.locks"),
    **dict.fromkeys(["MemorySystem"], "nt_memory.memory"),
    **dict.fromkeys(["MemoryDistiller", "Pattern"], "nt_memory.reasoningbank.distill"),
    **dict.fromkeys(["Trajectory"], "nt_memory.reasoningbank.trajectory"),
    **dict.fromkeys(["Verdict", "VerdictJudge", "VerdictResult"], "nt_memory.reasoningbank.verdict"),
    **dict.fromkeys(["HotCache", "l1_lookup"], "nt_memory.tiers.l1"),
    **dict.fromkeys(["Hit"], "nt_memory.tiers.l2"),
}

if TYPE_CHECKING:
    from nt_memory.config import CacheConfig, ClusterConfig, MemoryConfig
    from nt_memory.coordination.consensus import ConsensusResult, ConsensusStatus, Proposal, Vote
    from nt_memory.coordination.locks import LockToken
    from nt_memory.memory import MemorySystem
    from nt_memory.reasoningbank.distill import MemoryDistiller, Pattern
    from nt_memory.reasoningbank.trajectory import Trajectory
    from nt_memory.reasoningbank.verdict import Verdict, VerdictJudge, VerdictResult
    from nt_memory.tiers.l1 import HotCache, l1_lookup
    from nt_memory.tiers.l2 import Hit


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nt_memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    # the system and its configuration
    "CacheConfig",
    "ClusterConfig",
    "MemoryConfig",
    "MemorySystem",
    # tiers
    "Hit",
    "HotCache",
    "l1_lookup",
    # coordination
    "ConsensusResult",
    "ConsensusStatus",
    "LockToken",
    "Proposal",
    "Vote",
    # ReasoningBank
    "MemoryDistiller",
    "Pattern",
    "Trajectory",
    "Verdict",
    "VerdictJudge",
    "VerdictResult",
    # errors (every one derives from NtMemoryError)
    "CapacityError",
    "ClusterError",
    "CodecError",
    "ConfigError",
    "ConsensusError",
    "CorruptSegment",
    "InvalidEmbedding",
    "InvalidKey",
    "LayoutMismatch",
    "LockTimeout",
    "NtMemoryError",
    "SegmentClosed",
    "SegmentError",
    "SegmentExists",
    "SegmentNotFound",
    "SegmentNotOwned",
    "StaleToken",
    "SystemAbandoned",
    "TierError",
    "ValueTooLarge",
]
