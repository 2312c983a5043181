"""The kernels' word indices and sizes, and the formulas Python code needs too (a ring record's
size, the arena's size classes): one module per kernel module, in plain Python, so that code that
only reads shared words (``nt-memory ls``, ``inspect``, ``top``) imports them and never imports
numba. The kernels compile them in as constants, so these files are part of the jit fingerprint
(``kernels/_jit.py``): an edit here invalidates numba's cache like an edit to a kernel."""
