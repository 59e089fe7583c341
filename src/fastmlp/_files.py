"""Writing files so that a destination is never left half-written: the content goes to a
temporary file beside it, which is renamed into place only once complete.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from typing import BinaryIO, Callable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

# Our temporary files: ".fastmlp-<pid of the writer>-<mkstemp's random part>.tmp". Files of
# versions that did not name the writer (".fastmlp-<random>.tmp") match the second pattern.
_TEMPORARY = re.compile(r"\.fastmlp-(\d+)-[A-Za-z0-9_]{8}\.tmp")
_TEMPORARY_WITHOUT_PID = re.compile(r"\.fastmlp-[A-Za-z0-9_]{8}\.tmp")
# A temporary file is stale only when untouched this long (a writer alive in another PID
# namespace or on another host sharing the directory keeps writing to it, so its mtime is
# recent) and, when it names its writer, that process is gone.
STALE_SECONDS = 3600.0
STALE_SECONDS_WITHOUT_PID = 24 * 3600.0


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or a number we cannot ask about: keep its file
    return True


def remove_stale_temporaries(directory: str, now: Optional[float] = None) -> int:
    """Delete the temporary files a killed writer left in `directory`: only regular files of
    ours (our name pattern, owned by this user, not symlinks) untouched for STALE_SECONDS whose
    writer process is gone (STALE_SECONDS_WITHOUT_PID for files that do not name it). Never
    raises: a file another process removes or a directory we cannot list is skipped.

    Returns
    -------
    int
        The number of files deleted.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        named = _TEMPORARY.fullmatch(entry.name)
        if named is None and _TEMPORARY_WITHOUT_PID.fullmatch(entry.name) is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            continue
        age = now - info.st_mtime
        if named is not None:
            stale = age > STALE_SECONDS and not _process_exists(int(named.group(1)))
        else:
            stale = age > STALE_SECONDS_WITHOUT_PID
        if stale:
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def _umask() -> int:
    """The process's umask, read without changing it where the system says (Linux); elsewhere
    set and put back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: str) -> int:
    """The permissions the written file gets: those of the file it replaces, else what
    open() would give a new file (0o666 less the umask), as for any file a program writes."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def write_atomically(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    The file gets the permissions of the one it replaces, or those the umask gives a new
    file. Temporary files that killed writers left in the directory (ours only: see
    remove_stale_temporaries) are deleted first.

    Parameters
    ----------
    path : str or os.PathLike
        The destination; an existing file there is replaced only when writing succeeded.
    write : callable
        Writes the whole content into the binary file it is given.

    Raises
    ------
    TypeError
        When ``path`` is not a str or os.PathLike.
    OSError
        When the destination's directory is missing or not writable (the message names
        the path); nothing is left behind.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {path!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory")
    remove_stale_temporaries(directory)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".fastmlp-{os.getpid()}-", suffix=".tmp",
                                             dir=directory)
    except OSError as error:
        raise type(error)(error.errno, f"cannot write {path!r}: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            if hasattr(os, "fchmod"):  # mkstemp makes the file private (0600); the result should not be
                os.fchmod(file.fileno(), _mode_for(path))
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
