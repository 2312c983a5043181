"""The word indices and sizes of :mod:`nt_memory.kernels.arena`, whose docstring draws the layout."""

import numpy as np

ARENA_DATA_BYTES_IDX = 0
ARENA_NCLASSES_IDX = 1
ARENA_BUMP_IDX = 8
ARENA_USED_BYTES_IDX = 16
ARENA_CLASS_SIZE_IDX = 24
ARENA_MAX_CLASSES = 64
ARENA_FREE_HEAD_IDX = 88
ARENA_FREE_HEAD_STRIDE = 8  # one 64-byte line per head: allocators of different classes do not collide
ARENA_HDR_WORDS = ARENA_FREE_HEAD_IDX + ARENA_FREE_HEAD_STRIDE * ARENA_MAX_CLASSES
ARENA_HDR_BYTES = ARENA_HDR_WORDS * 8

BLOCK_HDR_BYTES = 16
BLOCK_ALIGN_BYTES = 16
FIRST_BLOCK_OFFSET = 16
# How far up the classes an allocation may go when its own class has no free block and the bump
# region is used up: trades internal waste for success once the arena is full of freed blocks.
CLASS_FALLBACK = 4


def class_sizes(max_block_bytes):
    """The block sizes of the classes (ascending, multiples of 16) up to ``max_block_bytes``.

    16-byte steps up to 128, then four classes per doubling, so a block wastes under 25 %.
    """
    sizes = list(range(32, 129, 16))
    step = 32
    while sizes[-1] < max_block_bytes:
        for _ in range(4):
            sizes.append(sizes[-1] + step)
        step *= 2
    if len(sizes) > ARENA_MAX_CLASSES:
        raise ValueError(f"max_block_bytes={max_block_bytes} needs more than {ARENA_MAX_CLASSES} classes")
    return np.array(sizes, dtype=np.int64)
