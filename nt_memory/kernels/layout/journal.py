"""The word indices and sizes of :mod:`nt_memory.kernels.journal`, whose docstring draws the layout."""

JOURNAL_PUT = 1
JOURNAL_DELETE = 2
JOURNAL_PUT_EMB = 3  # a put whose record also carries the key's embedding, after the value
JOURNAL_EXPIRY_OFFSET = 0
JOURNAL_LENS_OFFSET = JOURNAL_EXPIRY_OFFSET + 8
JOURNAL_KEY_OFFSET = JOURNAL_LENS_OFFSET + 8
JOURNAL_PAYLOAD_FIXED = JOURNAL_KEY_OFFSET  # data expiry (8) | key length (4) | value length (4)
