"""Low-level file helpers every stage shares: atomic writes, JSON reading, digests, times and durations.

Atomic writes go to a temporary file beside the target, then rename: a reader (or a process killed
with SIGKILL half-way) never sees a half-written file, either the old content or the new one.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import signal
import socket
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "append_line",
           "kill_point", "remove_orphaned_temporaries", "read_json", "file_sha256", "digest", "utc_now",
           "format_duration", "WRITE_ERRNOS", "write_problem"]

_MISSING = object()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path with the same suffix as ``path``; rename it over ``path`` on success.

    The suffix is kept because some writers (``keras.Model.save``, ``savefig``) choose
    the format from it. On an exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.hpstmp{_HOST}.{os.getpid()}-",
                                    suffix=f"{target.suffix}.tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide the artefacts from the rest of a team
    try:
        yield tmp
        kill_point(f"write:{target.name}")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS and exc.filename != str(target):
            raise OSError(exc.errno, exc.strerror, str(target)) from exc  # name the file, not its temporary
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


# The errors of a write that the user can fix: a full disk or quota, a read-only or forbidden folder.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def write_problem(exc: BaseException, *, rerun: bool = True) -> str | None:
    """A one-line description of a write the user can fix (disk full, read-only...), else None.

    ``rerun`` adds that what was written is kept and the same command goes on from there.
    """
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space within the quota",
            errno.EROFS: "the file system is read-only: use a writable copy of the study folder"}.get(
        exc.errno, "check the folder's permissions")
    tail = "; what was already written is kept, run the same command again" if rerun else ""
    return f"cannot write{where}: {exc.strerror} ({hint}){tail}"


# Temporary files are named ``.<stem>.hpstmp<host>.<pid>-<random><suffix>.tmp<suffix>``: a later write of
# the same target removes the ones left by a writer of this host that no longer runs (SIGKILL, power
# loss), and never touches those of a live writer or of another machine sharing the folder (NFS).
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_ORPHAN = re.compile(r"\.hpstmp(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)-")


def _remove_orphans(target: Path) -> None:
    for leftover in target.parent.glob(f".{glob.escape(target.stem)}.hpstmp*"):
        _remove_if_orphaned(leftover)


def remove_orphaned_temporaries(folder: str | os.PathLike[str]) -> int:
    """Remove, anywhere below ``folder``, the temporary files of writers of this host that no longer run.

    A write killed before its rename leaves its temporary file until the same target is written again;
    a target that is never rewritten (a finished trial's files) would keep it forever. Returns how many.
    """
    return sum(_remove_if_orphaned(leftover) for leftover in Path(folder).rglob(".*.hpstmp*"))


def _remove_if_orphaned(leftover: Path) -> bool:
    match = _ORPHAN.search(leftover.name)
    if match and match["host"] == _HOST and not _alive(int(match["pid"])):
        leftover.unlink(missing_ok=True)
        return True
    return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically and return the path."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0) > 0:  # numpy arrays
        return obj.tolist()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line to a log file (JSON Lines ledger) and fsync it.

    The line always starts on a fresh line: when the file's last line was cut short (a writer killed
    mid-append), a newline is written first, so the torn line stays on its own and the new one parses.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = line.rstrip("\n").encode("utf-8") + b"\n"
    with open(target, "ab+") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        kill_point(f"append:{target.name}")
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


_KILL_COUNTS: collections.Counter[str] = collections.Counter()


def kill_point(name: str) -> None:
    """Test-only crash hook: SIGKILL this process at the named point when ``HPSTUDY_TEST_KILL_AT`` asks.

    ``HPSTUDY_TEST_KILL_AT=write:trials.csv`` kills at the first write of ``trials.csv`` after its temporary
    file is complete and before it is renamed into place; ``...#3`` at the third such point in the process.
    Points: ``write:<file name>`` for every atomic write, ``append:<file name>`` before every append.
    Unset (always, outside the crash tests), this is a
    dictionary lookup.
    """
    wanted = os.environ.get("HPSTUDY_TEST_KILL_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    _KILL_COUNTS[name] += 1
    if _KILL_COUNTS[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def read_json(path: str | os.PathLike[str], default: Any = _MISSING) -> Any:
    """Parsed JSON of ``path``; with ``default``, that value when the file is missing or unreadable.

    Without ``default`` a missing or broken file raises (``OSError`` / ``ValueError``), so a caller that
    must not go on without the file says which file it is.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        if default is _MISSING:
            raise
        return default


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in chunks (model files are large)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def digest(parts: Mapping[str, Any], length: int = 24) -> str:
    """A short, stable hash of a JSON-able mapping (keys sorted): a cache key."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (how every hpstudy record stamps time)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s`` or ``1h02m``: a duration as people read it; ``never`` for None or NaN."""
    if seconds is None or seconds != seconds:
        return "never"
    seconds = int(round(float(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
