"""Another local user cannot squat a system's name, and what a system stores is private.

The attacker is a real second uid (created with ``useradd`` when the tests run as root): a forked
child drops to it and creates a complete, valid system under the victim's name, world-writable,
with its own storage path, before the victim opens it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile

import numpy as np
import pytest

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.errors import SegmentNotOwned
from nt_memory.shm.system import PREFIX, SHM_DIR, remove_system
from nt_memory.tiers.l1 import HotCache
from nt_memory.tiers.l3 import ColdStore

ATTACKER = "ntm-attacker"


def _attacker_uid() -> int:
    if os.geteuid() != 0:
        pytest.skip("needs root to create and become a second user (CI runs as root)")
    try:
        return pwd.getpwnam(ATTACKER).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", ATTACKER], check=True, capture_output=True)
        return pwd.getpwnam(ATTACKER).pw_uid


def _squat(name: str, uid: int) -> str:
    """Create system ``name`` as ``uid`` (mode 0666, the attacker's storage path); returns it."""
    path = tempfile.mkdtemp(prefix="ntm-attacker-")
    os.chmod(path, 0o777)
    # The second uid cannot read this interpreter's site-packages (under /root): make the parent
    # import what creating a system imports lazily, so the forked child finds it loaded.
    warm = tempfile.mkdtemp()
    ColdStore(warm).close()
    shutil.rmtree(warm)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the attacker: no LMDB environment of the parent is used here
        status = 1
        try:
            os.close(r)
            os.setgid(pwd.getpwuid(uid).pw_gid)
            os.setuid(uid)
            cfg = MemoryConfig(name=name, storage_path=path, mode=0o666, cache_config=CacheConfig(max_entries=64))
            MemorySystem._create(cfg, "attacker").close()
            status = 0
        except BaseException:  # noqa: BLE001 - reported to the parent through the pipe
            import traceback

            traceback.print_exc()
        finally:
            os.write(w, bytes([status]))
            os._exit(status)
    os.close(w)
    assert os.read(r, 1) == b"\0", "the attacker could not create its system"
    os.waitpid(pid, 0)
    os.close(r)
    return path


def test_a_system_squatted_by_another_user_is_refused(name, tmp_path):
    uid = _attacker_uid()
    attacker_path = _squat(name, uid)
    try:
        files = [f for f in os.listdir(SHM_DIR) if f.startswith(f"{PREFIX}{name}.")]
        assert files and all(os.stat(os.path.join(SHM_DIR, f)).st_uid == uid for f in files)
        cfg = MemoryConfig(name=name, storage_path=str(tmp_path))
        with pytest.raises(SegmentNotOwned, match=f"uid {uid}"):
            MemorySystem.open(cfg, timeout=1.0)
        with pytest.raises(SegmentNotOwned):
            HotCache.attach(name)
        # Nothing of the victim's went anywhere: its storage path was never even created.
        assert not os.listdir(tmp_path)
        assert (
            not os.path.exists(os.path.join(attacker_path, "data.mdb"))
            or os.stat(os.path.join(attacker_path, "data.mdb")).st_uid == uid
        )
    finally:
        remove_system(name)
        shutil.rmtree(attacker_path, ignore_errors=True)


def test_another_users_private_system_is_a_clear_error(name):
    uid = _attacker_uid()
    attacker_path = _squat(name, uid)
    try:
        for f in os.listdir(SHM_DIR):
            if f.startswith(f"{PREFIX}{name}."):
                os.chmod(os.path.join(SHM_DIR, f), 0o600)
        with pytest.raises(SegmentNotOwned):
            HotCache.attach(name)
    finally:
        remove_system(name)
        shutil.rmtree(attacker_path, ignore_errors=True)


def test_storage_and_segments_are_private_even_under_umask_000(name, tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "store"
        cfg = MemoryConfig(name=name, storage_path=str(path), embedding_dim=4)
        with MemorySystem.open(cfg) as mem:
            mem.put("ns", "k", 1, embedding=np.ones(4))
            mem.search_similar("ns", np.ones(4))
            mem.flush()
            mem.close()
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
            for f in ("data.mdb", "lock.mdb"):
                assert stat.S_IMODE(os.stat(path / f).st_mode) == 0o600, f
            for f in os.listdir(path / "l2"):
                assert stat.S_IMODE(os.stat(path / "l2" / f).st_mode) == 0o600, f
            assert stat.S_IMODE(os.stat(path / "l2").st_mode) == 0o700
            for f in os.listdir(SHM_DIR):
                if f.startswith(f"{PREFIX}{name}."):
                    assert stat.S_IMODE(os.stat(os.path.join(SHM_DIR, f)).st_mode) == 0o600, f
            mem.unlink()
    finally:
        os.umask(old)


def test_the_config_is_under_the_checksum(name, tmp_path):
    """A co-tenant that rewrites the root's config (say, its storage path) is caught at attach."""
    with MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path))) as mem:
        root = os.path.join(SHM_DIR, f"{PREFIX}{name}.root")
        with open(root, "r+b") as f:
            data = f.read()
            at = data.index(str(tmp_path).encode())
            f.seek(at)
            f.write(b"/tmp/evil"[: len(str(tmp_path))])
        from nt_memory.errors import CorruptSegment

        with pytest.raises(CorruptSegment, match="checksum"):
            HotCache.attach(name)
        mem.unlink()
