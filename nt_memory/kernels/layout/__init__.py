"""The kernels' word indices and sizes, one module per kernel module, importable without numba."""
