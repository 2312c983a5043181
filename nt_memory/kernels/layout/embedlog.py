"""The word indices and sizes of :mod:`nt_memory.kernels.embedlog` (its docstring draws the layout), without
numba: code that only reads shared words (``nt-memory ls`` and ``inspect``) imports these and never loads a
kernel."""

RECORD_HDR_BYTES = 32  # shm/embed_layout.py
FIRST_ID_WORD = 0  # shm/embed_layout.py: FIRST_ID_IDX
KEY_BUMP_WORD = 1  # shm/embed_layout.py: KEY_BUMP_IDX

REC_PUT = 1  # shm/embed_layout.py
