"""Python code writes shared memory only through ``kernels/words.py``.

A numpy subscript store into a segment's view is a plain store the compiler and the CPU may order as
they like, and a slice store may tear between words. The rule is checked from the source: in every
module above the kernels, a name bound to a view of a segment (``.region(...)``, ``.words``, ``.buf``,
or a slice or ``.view`` of one of those) is never the target of a subscript assignment.
"""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from nt_memory.kernels.words import add_word, fill_words, store_word, store_words
from nt_memory.shm.layout import float_word, text_words

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "nt_memory"
ABOVE_KERNELS = sorted(p for p in PACKAGE.rglob("*.py") if "kernels" not in p.parts and "benchmarks" not in p.parts)
VIEW_ATTRS = {"words", "buf", "entries", "ctl", "slots", "f64", "ring", "board", "_board"}


def _target_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return "self." + node.attr
    return None


def _is_view(expr: ast.expr, views: set[str]) -> bool:
    """``expr`` evaluates to a view of shared memory, as far as the source can tell."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        if expr.func.attr == "region":
            return True
        if expr.func.attr == "view":
            return _is_view(expr.func.value, views)
    if isinstance(expr, ast.Attribute):
        if expr.attr in ("words", "buf") and _target_name(expr) != "self.words" or _target_name(expr) in views:
            return True
        return _is_view(expr.value, views) if expr.attr in ("words", "buf") else False
    if isinstance(expr, ast.Subscript):
        return _is_view(expr.value, views)
    return isinstance(expr, ast.Name) and expr.id in views


def shared_view_stores(source: str) -> list[tuple[int, str]]:
    """(line, target) of each subscript store into a shared view in ``source``."""
    tree = ast.parse(source)
    views = {"self." + a for a in VIEW_ATTRS}
    for node in ast.walk(tree):  # names bound to views anywhere in the module
        if isinstance(node, ast.Assign) and _is_view(node.value, views):
            views.update(n for n in map(_target_name, node.targets) if n)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Subscript) and _target_name(t.value) in views:
                    out.append((node.lineno, ast.unparse(t)))
    return out


@pytest.mark.parametrize("path", ABOVE_KERNELS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_numpy_store_into_shared_memory(path):
    found = shared_view_stores(path.read_text())
    assert not found, f"{path.name}: write these through kernels/words.py: {found}"


def test_the_check_sees_the_stores_it_forbids():
    src = (
        "def f(seg, self):\n"
        "    w = seg.region(0, 64, 'int64')\n"
        "    w[1] = 2\n"
        "    self.ctl[3] += 1\n"
        "    f = w.view('float64')\n"
        "    f[0] = 1.5\n"
        "    row = np.zeros(4)\n"
        "    row[0] = 1\n"
    )
    assert [line for line, _ in shared_view_stores(src)] == [3, 4, 6]


def test_word_writers_store_check_and_compose():
    words = np.zeros(8, np.int64)
    store_word(words, 1, 7)
    store_words(words, 2, text_words(b"abcdefghij"))
    fill_words(words, 5, 8, -1)
    assert add_word(words, 1, 3) == 7
    store_word(words, 0, float_word(2.5))
    assert words[1] == 10 and words[5:].tolist() == [-1, -1, -1]
    assert words[2:4].tobytes() == b"abcdefghij\0\0\0\0\0\0"
    assert words[:1].view(np.float64)[0] == 2.5
    for bad in (lambda: store_word(words, 8, 0), lambda: store_words(words, 7, np.zeros(2, np.int64))):
        with pytest.raises(IndexError):
            bad()
    with pytest.raises(IndexError):
        fill_words(words, -1, 2, 0)
    with pytest.raises(ValueError, match="do not fit"):
        text_words(b"x" * 9, 1)
