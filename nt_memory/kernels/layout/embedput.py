"""The word indices and sizes of :mod:`nt_memory.kernels.embedput`, whose docstring draws the layout."""

LC_COUNT_ADDR = 0  # the log's COUNT word
LC_LOCK_ADDR = 1  # the log's append lock word
LC_NCHUNKS_ADDR = 2  # the log's NCHUNKS word
LC_OWNER = 3  # this process's owner id (the lock words' value)
LC_CHUNK_NO = 4  # the chunk mapped last (-1: none yet)
LC_CHUNK_ADDR = 5
LC_CHUNK_SIZE = 6
LC_WORDS_OFF = 7  # the chunk layout's offsets, and records per chunk
LC_KEYS_OFF = 8
LC_KEYS_END = 9
LC_HEADERS_OFF = 10
LC_VECTORS_OFF = 11
LC_VEC_BYTES = 12
LC_CHUNK_RECORDS = 13
LC_LATEST_UPTO = 14  # the latest-id map holds every record below this id
LC_IDS_LO = 15  # the latest-id map's three arrays (kernels/idmap.py) and their length
LC_IDS_HI = 16
LC_IDS_VALS = 17
LC_IDS_LEN = 18
LC_WORDS = 19

SLOW_PATH = -100  # not the common case (see above): nothing was done
