"""The word indices and sizes of :mod:`nt_memory.kernels.embedlog`, whose docstring draws the layout."""

RECORD_HDR_BYTES = 32  # shm/embed_layout.py
FIRST_ID_WORD = 0  # shm/embed_layout.py: FIRST_ID_IDX
KEY_BUMP_WORD = 1  # shm/embed_layout.py: KEY_BUMP_IDX

REC_PUT = 1  # shm/embed_layout.py
