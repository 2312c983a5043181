"""One POSIX shared-memory segment: create, attach, close, unlink.

A segment crosses processes as its name alone (``/ntm.<system>.<part>``). The creator reserves every
page up front (``posix_fallocate``), so a full ``/dev/shm`` is a :class:`CapacityError` at create
instead of a SIGBUS when a page is first touched later. The segment owns its numpy views and drops
them before unmapping; ``close()`` may be called twice, ``unlink()`` before or after ``close()``.
Python's ``multiprocessing.resource_tracker`` is never involved (it would unlink segments that other
processes still use).
"""

from __future__ import annotations

import errno
import mmap
import os
import platform
import secrets
import time

import numpy as np
import posix_ipc

from nt_memory.errors import (
    CapacityError,
    CorruptSegment,
    LayoutMismatch,
    SegmentExists,
    SegmentNotFound,
    SegmentNotOwned,
)
from nt_memory.kernels import lazy
from nt_memory.shm import layout as L

KW = lazy("words", globals())

SHM_DIR = "/dev/shm"


# On x86-64 an aligned 8-byte load is atomic and no later load passes it (TSO): a numpy read of a
# word is an acquire load there.
_TSO = platform.machine().lower() in ("x86_64", "amd64")


def acquire_load(words: np.ndarray, idx: int) -> int:
    """``words[idx]`` (a view of shared int64 words), acquire-loaded. On x86-64 a numpy read, which
    loads no compiled code (the first kernel a process calls brings in numba's compiler, about half
    a second of ``nt-memory ls``); elsewhere the kernels' acquire load."""
    if _TSO:
        return int(words[idx])
    return int(KW.word_load(words.ctypes.data + idx * 8))


# madvise advice that faults a range in, writable, without writing it (Linux 5.14; the mmap module
# of Python 3.11 does not name it).
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


class Segment:
    """A mapped segment. ``buf`` (uint8) and ``words`` (int64) view all of it; ``address`` is the
    base address kernels receive."""

    def __init__(self, shm_name: str, mm: mmap.mmap, mode: int = 0o600, inode: int = 0):
        self.shm_name = shm_name
        self.mode = mode
        self.inode = inode
        self.size = len(mm)
        self._mm = mm
        self.buf = np.frombuffer(mm, dtype=np.uint8)
        self.words = self.buf.view(np.int64)
        self.address = self.buf.ctypes.data
        self.closed = False

    # -------------------------------------------------------------------------------- lifecycle
    @classmethod
    def create(
        cls,
        shm_name: str,
        kind: int,
        size: int,
        params=(),
        mode: int = 0o600,
        state: int = L.STATE_READY,
        gid: int | None = None,
    ) -> Segment:
        """Create and map a new segment of ``size`` bytes with a fresh header; fails with
        ``SegmentExists`` if the name is taken.

        Where ``/dev/shm`` is visible (Linux) the segment is built under a temporary name and
        published with ``link()``, atomic and exclusive: an attacher sees either no segment or a
        complete header, never a half-written one."""
        if size < L.HEADER_BYTES:
            raise ValueError(f"segment size {size} is smaller than its header ({L.HEADER_BYTES} bytes)")
        atomic = os.path.isdir(SHM_DIR)
        build_name = f"{shm_name}.new{os.getpid()}{secrets.token_hex(4)}" if atomic else shm_name
        try:
            shm = posix_ipc.SharedMemory(build_name, posix_ipc.O_CREX, mode=mode, size=0)
        except posix_ipc.ExistentialError:
            raise SegmentExists(f"shared-memory segment {shm_name!r} already exists") from None
        try:
            if gid is not None:
                os.fchown(shm.fd, -1, gid)
            os.fchmod(shm.fd, mode)  # exactly the mode asked for, whatever the umask
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(shm.fd, 0, size)
                else:  # macOS: no reservation possible
                    os.ftruncate(shm.fd, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                    raise CapacityError(
                        f"cannot reserve {size:,} bytes of shared memory for {shm_name!r}: {exc.strerror} "
                        "(is /dev/shm too small? Docker's default is 64 MB: use --shm-size)"
                    ) from exc
                raise
            mm = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            _unlink_quietly(build_name)
            raise
        shm.close_fd()
        seg = cls(shm_name, mm, mode)
        params = list(params)
        if len(params) > L.N_PARAMS:
            seg.close()
            _unlink_quietly(build_name)
            raise ValueError(f"at most {L.N_PARAMS} header params, got {len(params)}")
        # The header is composed privately and stored in one call.
        header = np.zeros(L.HEADER_BYTES // 8, np.int64)
        header[L.MAGIC_IDX] = L.MAGIC
        header[L.VERSION_KIND_IDX] = L.LAYOUT_VERSION | (kind << 32)
        header[L.TOTAL_BYTES_IDX] = size
        header[L.HEADER_BYTES_IDX] = L.HEADER_BYTES
        header[L.CREATOR_PID_IDX] = os.getpid()
        header[L.CREATED_NS_IDX] = time.time_ns()
        header[L.STATE_IDX] = state
        header[L.PARAMS_IDX : L.PARAMS_IDX + L.N_PARAMS] = params + [0] * (L.N_PARAMS - len(params))
        header[L.CHECKSUM_IDX] = L.header_checksum(header)
        KW.store_words(seg.words, 0, header)
        if atomic:
            try:
                os.link(SHM_DIR + build_name, SHM_DIR + shm_name)
            except FileExistsError:
                seg.close()
                raise SegmentExists(f"shared-memory segment {shm_name!r} already exists") from None
            finally:
                _unlink_quietly(build_name)
        return seg

    @classmethod
    def attach(cls, shm_name: str, kind: int, *, allow_gid: int | None = None) -> Segment:
        """Map an existing segment and validate its owner and its header (magic, version, kind,
        size, checksum). A segment owned by another uid is refused (``SegmentNotOwned``) unless
        ``allow_gid`` is its group and only that group shares it: another local user who created
        the name first must not be able to read or replace what this process stores."""
        try:
            shm = posix_ipc.SharedMemory(shm_name)
        except posix_ipc.ExistentialError:
            raise SegmentNotFound(f"no shared-memory segment named {shm_name!r}") from None
        except posix_ipc.PermissionsError:
            raise SegmentNotOwned(
                f"shared-memory segment {shm_name!r} exists but this user may not open it: another user made it "
                "(choose another system name)"
            ) from None
        try:
            st = os.fstat(shm.fd)
            check_owner(shm_name, st, allow_gid)
            size = st.st_size
            if size < L.HEADER_BYTES:
                raise CorruptSegment(
                    f"segment {shm_name!r} is truncated: {size} bytes, shorter than its {L.HEADER_BYTES}-byte header"
                )
            mm = mmap.mmap(shm.fd, size)
        finally:
            shm.close_fd()
        seg = cls(shm_name, mm, st.st_mode & 0o777, st.st_ino)
        try:
            seg._validate(kind)
        except BaseException:
            seg.close()
            raise
        return seg

    def _validate(self, kind: int) -> None:
        w = self.words
        name = self.shm_name
        if int(w[L.MAGIC_IDX]) != L.MAGIC:
            raise CorruptSegment(f"segment {name!r} is not an nt-memory segment (bad magic)")
        version = int(w[L.VERSION_KIND_IDX]) & 0xFFFFFFFF
        seg_kind = int(w[L.VERSION_KIND_IDX]) >> 32
        if int(w[L.CHECKSUM_IDX]) != L.header_checksum(w):
            raise CorruptSegment(f"segment {name!r} has a damaged header (checksum mismatch)")
        if version != L.LAYOUT_VERSION:
            raise LayoutMismatch(
                f"segment {name!r} has layout version {version}; this nt-memory reads version {L.LAYOUT_VERSION}"
            )
        if seg_kind != kind:
            raise LayoutMismatch(
                f"segment {name!r} is a {L.KIND_NAMES.get(seg_kind, seg_kind)!r} segment, "
                f"expected {L.KIND_NAMES.get(kind, kind)!r}"
            )
        if int(w[L.TOTAL_BYTES_IDX]) != self.size or int(w[L.HEADER_BYTES_IDX]) != L.HEADER_BYTES:
            raise CorruptSegment(
                f"segment {name!r} is {self.size:,} bytes but its header says {int(w[L.TOTAL_BYTES_IDX]):,}"
            )

    @property
    def params(self) -> list[int]:
        return [int(x) for x in self.words[L.PARAMS_IDX : L.PARAMS_IDX + L.N_PARAMS]]

    @property
    def creator_pid(self) -> int:
        return int(self.words[L.CREATOR_PID_IDX])

    @property
    def created_ns(self) -> int:
        return int(self.words[L.CREATED_NS_IDX])

    def region(self, offset: int, nbytes: int, dtype=np.uint8) -> np.ndarray:
        """A view of ``nbytes`` at ``offset``; refuses a region outside the segment."""
        if offset < L.HEADER_BYTES or nbytes < 0 or offset + nbytes > self.size:
            raise CorruptSegment(
                f"segment {self.shm_name!r}: region [{offset}, {offset + nbytes}) lies outside its {self.size:,} bytes"
            )
        return self.buf[offset : offset + nbytes].view(dtype)

    def release_pages(self, offset: int, nbytes: int) -> None:
        """Give the pages of ``[offset, offset + nbytes)`` (page-aligned) back to the system: a hole
        in the tmpfs file (``MADV_REMOVE``), for every process that maps it; a later read there
        sees zeros."""
        if offset % L.PAGE_BYTES or nbytes % L.PAGE_BYTES or offset < L.HEADER_BYTES or offset + nbytes > self.size:
            raise CorruptSegment(f"segment {self.shm_name!r}: [{offset}, {offset + nbytes}) is no page range of it")
        if nbytes:
            self._mm.madvise(mmap.MADV_REMOVE, offset, nbytes)

    def populate(self, offset: int, nbytes: int) -> bool:
        """Map the pages of ``[offset, offset + nbytes)`` into this process now, writable
        (``MADV_POPULATE_WRITE``), for a ring that this process will write through: otherwise its
        first lap here takes a page fault every 4 KiB (a fresh process writing the journal took
        1,367 faults per 50,000 puts, about 55 ns a put). The pages become memory of the segment
        (they would on the first lap anyway). False, with nothing done, on a kernel before Linux
        5.14 or when the system has no memory for them: the pages then fault in on first use, as
        before, and a full ``/dev/shm`` is reported by the write that needs the page."""
        start = offset - offset % L.PAGE_BYTES
        end = min(self.size, offset + nbytes)
        if offset < 0 or nbytes < 0 or end <= start:
            return False
        try:
            self._mm.madvise(MADV_POPULATE_WRITE, start, end - start)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Unmap. Safe to call twice. If a caller still holds a zero-copy view, the mapping stays
        until that view is gone (unmapping under it would crash the process)."""
        if self.closed:
            return
        self.closed = True
        self.buf = self.words = None  # type: ignore[assignment]  # closed: drop the views
        self.address = 0
        try:
            self._mm.close()
        except BufferError:
            pass  # exported views alive: the mmap is released when they are collected

    def unlink(self) -> None:
        """Remove the name; processes that have it mapped keep their mapping."""
        _unlink_quietly(self.shm_name)


def check_owner(shm_name: str, st: os.stat_result, allow_gid: int | None = None) -> None:
    """Refuse a segment this effective uid does not own, unless it is shared with ``allow_gid``
    (group-owned by it, and not open to others)."""
    if st.st_uid == os.geteuid():
        return
    if allow_gid is not None and st.st_gid == allow_gid and not st.st_mode & 0o007:
        return
    raise SegmentNotOwned(
        f"shared-memory segment {shm_name!r} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}): "
        "refusing to attach (another local user may have created the name first; choose another name, or "
        "share a system through a group with MemoryConfig(group=...))"
    )


def _unlink_quietly(shm_name: str) -> bool:
    try:
        posix_ipc.unlink_shared_memory(shm_name)
        return True
    except posix_ipc.ExistentialError:
        return False
