"""nt-memory: a shared-memory, zero-copy memory engine for co-located agent processes."""

from nt_memory.config import CacheConfig, MemoryConfig
from nt_memory.coordination.consensus import ConsensusResult, ConsensusStatus, Proposal, Vote
from nt_memory.coordination.locks import LockToken
from nt_memory.errors import (
    CapacityError,
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
from nt_memory.memory import MemorySystem
from nt_memory.reasoningbank.distill import MemoryDistiller, Pattern
from nt_memory.reasoningbank.trajectory import Trajectory
from nt_memory.reasoningbank.verdict import Verdict, VerdictJudge, VerdictResult
from nt_memory.tiers.l1 import HotCache, l1_lookup
from nt_memory.tiers.l2 import Hit

__version__ = "0.1.0"

__all__ = [
    # the system and its configuration
    "CacheConfig",
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
