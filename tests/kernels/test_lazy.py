"""kernels.lazy, Compiled and on_first_use: kernels imported on first use, from any thread."""

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_first_use_from_many_threads_at_once_imports_once_and_rebinds_the_global():
    """Eight threads make the first use of a lazily imported kernel module at the same moment, in a
    fresh interpreter: each gets the right answer, numba is imported by that use (not before), and
    the importer's global then names the module itself."""
    done = _run(
        """
        import sys, threading, types
        import numpy as np
        import nt_memory.tiers.l1 as l1
        assert "numba" not in sys.modules and type(l1.KW).__name__ == "lazy"
        words = np.arange(8, dtype=np.int64)
        barrier, results = threading.Barrier(8), []

        def first_use(i):
            barrier.wait()
            results.append(l1.KW.word_load(words.ctypes.data + i * 8))

        threads = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == list(range(8)), results
        assert "numba" in sys.modules
        assert isinstance(l1.KW, types.ModuleType) and l1.KW.__name__ == "nt_memory.kernels.words"
        """
    )
    assert done.returncode == 0, done.stderr


def test_the_njit_api_is_the_kernel_and_imports_numba_only_when_named():
    """``l1_lookup`` and ``array_data_offset`` are reached through their modules' ``__getattr__``:
    importing the modules imports no numba; naming them gives the compiled functions (the very
    kernel, for ``l1_lookup``), and a name they do not have is an AttributeError."""
    done = _run(
        """
        import sys
        import nt_memory.tiers.codec as codec
        import nt_memory.tiers.l1 as l1
        assert "numba" not in sys.modules
        from nt_memory import l1_lookup
        from nt_memory.kernels import table
        assert l1_lookup is table.l1_lookup is l1.l1_lookup
        from nt_memory.tiers.codec import array_data_offset, encode
        import numpy as np
        enc = np.frombuffer(encode(np.arange(3.0)), np.uint8)
        assert enc[array_data_offset(enc):].view(np.float64).tolist() == [0.0, 1.0, 2.0]
        try:
            l1.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("no AttributeError")
        """
    )
    assert done.returncode == 0, done.stderr


def test_a_probe_of_a_lazy_module_imports_nothing():
    """copy, pickle and introspection ask objects for dunder names: a lazy kernel module answers
    them with AttributeError instead of importing the kernels (and numba) for them."""
    done = _run(
        """
        import copy, sys
        from nt_memory.kernels import lazy
        namespace = {}
        namespace["KW"] = k = lazy("words", namespace)
        assert not hasattr(k, "__wrapped__") and copy.copy(k) is not None
        assert "nt_memory.kernels.words" not in sys.modules and "numba" not in sys.modules
        assert namespace["KW"] is k
        """
    )
    assert done.returncode == 0, done.stderr
