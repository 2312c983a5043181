"""Build hook: the optional compiled fast path (nt_memory/_fastpath.c).

Everything else is in pyproject.toml. ``optional=True``: on a machine without a C compiler (or
off Linux) the extension is skipped with setuptools' warning and nt-memory runs its pure path.
"""

import numpy
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nt_memory._fastpath",
            ["nt_memory/_fastpath.c"],
            include_dirs=[numpy.get_include()],  # the array fast path builds arrays with numpy's C API
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wno-missing-field-initializers"],
        )
    ]
)
