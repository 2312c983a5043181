"""The put is compiled once, whoever calls it: every extra copy of ``table_put`` is seconds more of
the first run's compile (see the README's cold start)."""

import os
import subprocess
import sys
import textwrap


def test_every_caller_of_table_put_shares_one_compiled_copy(tmp_path):
    """In a fresh interpreter with an empty numba cache, compile every kernel that calls
    ``table_put`` (Python's ``bytes`` put, the C entries of a put and a batch, the embedding put):
    ``table_put`` then has exactly one compiled signature, all int64. A ``.ctypes.data`` (uint64)
    or a literal 0 passed by one caller once made it two."""
    code = textwrap.dedent(
        """
        from nt_memory.kernels import cabi, embedput, table
        from nt_memory.kernels._jit import BYTES, INT, entry_point

        entry_point(table.table_put_bytes, INT, INT, BYTES, BYTES, INT, INT, INT, INT, BYTES)
        entry_point(embedput.put_with_embedding, INT, INT, BYTES, BYTES, INT, INT, INT, BYTES, INT, INT, INT)
        assert cabi.L1_PUT.address and cabi.L1_PUT_MANY.address
        print(len(table.table_put.overloads), table.table_put.signatures)
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "1 [(int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64)]"
    )
