"""The per-host fingerprint key: HMAC key for correlating secrets without storing them.

Evidence in the audit log is a masked preview plus HMAC(key, raw value). Whoever holds the key
can test guesses against fingerprints (a short PIN or a known email is quickly brute-forced), so
the key must be readable by root only: we create it 0600 in a 0700 directory and refuse to use
one that group or others could read, or that another user owns, rather than silently "fixing"
it (a key that was exposed should be replaced, which is the operator's decision).

The key is created atomically (written to a temporary file, fsynced, then linked into place),
so a crash never leaves a short key behind and two starts racing agree on one key.
"""

from __future__ import annotations

import os
import stat
import tempfile

from egressguard.errors import EnvironmentProblem

KEY_FILE = "fingerprint.key"
KEY_BYTES = 32


def load_or_create_key(state_dir: str | os.PathLike[str]) -> bytes:
    """Return the 32-byte key from `<state_dir>/fingerprint.key`, creating both if needed."""
    state_dir = os.fspath(state_dir)
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        os.chmod(state_dir, 0o700)     # makedirs' mode is filtered by the umask
    path = os.path.join(state_dir, KEY_FILE)
    if not os.path.lexists(path):
        _create(state_dir, path)
    return _read(path)


def _create(state_dir: str, path: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".fingerprint.", dir=state_dir)   # mode 0600
    try:
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)              # fails if another start won the race: use theirs
        except FileExistsError:
            pass
        dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


def _read(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read the fingerprint key {path}: {exc.strerror} "
                                 "(it must be a regular file, not a symlink)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EnvironmentProblem(f"fingerprint key {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise EnvironmentProblem(
                f"fingerprint key {path} is owned by uid {st.st_uid}, not by egressguard "
                f"(uid {os.geteuid()}): if it is legitimate, chown it; otherwise delete it "
                "and a new key is made (old fingerprints will no longer correlate)")
        if st.st_mode & 0o077:
            raise EnvironmentProblem(
                f"fingerprint key {path} is accessible to group/others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): anyone who read it can brute-force "
                f"fingerprints. Fix: chmod 600 {path}, or delete it to make a new key "
                "(old fingerprints will no longer correlate)")
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise EnvironmentProblem(f"fingerprint key {path} has {len(data)} bytes, expected "
                                 f"{KEY_BYTES}: delete it to make a new key")
    return data
