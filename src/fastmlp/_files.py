"""Writing files so that a destination is never left half-written: the content goes to a
temporary file beside it, which is renamed into place only once complete.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import time
from typing import BinaryIO, Callable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

# Our temporary files name their writer where the system lets us know for sure whether it
# still runs (Linux): ".fastmlp-<pid>-<its start time>-<system tag>-<mkstemp's random part>.tmp".
# The start time (clock ticks after boot, /proc/<pid>/stat) tells the writer from a later
# process given the same pid; the system tag (from the boot id and the PID namespace) tells
# whether that pid and time are ours to look up at all (not another host's or container's
# sharing the directory). Elsewhere, and in older versions, ".fastmlp-<pid>-<random>.tmp";
# the oldest versions named no writer (".fastmlp-<random>.tmp").
_TEMPORARY_WITH_START = re.compile(r"\.fastmlp-(\d+)-(\d+)-([0-9a-f]{12})-[A-Za-z0-9_]{8}\.tmp")
_TEMPORARY = re.compile(r"\.fastmlp-(\d+)-[A-Za-z0-9_]{8}\.tmp")
_TEMPORARY_WITHOUT_PID = re.compile(r"\.fastmlp-[A-Za-z0-9_]{8}\.tmp")
# A file whose writer we cannot look up is stale only when untouched this long (a writer
# alive in another PID namespace or on another host sharing the directory keeps writing to
# it, so its mtime is recent) and, when it names its pid, no process of ours has it.
STALE_SECONDS = 3600.0
STALE_SECONDS_WITHOUT_PID = 24 * 3600.0


def _start_time(pid: int) -> Optional[int]:
    """The start time of live process `pid` (clock ticks after boot), or None when no such
    process runs (a zombie no longer writes either) or the system does not say (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
        # "pid (comm) state ... starttime ...": comm may hold spaces and parentheses, so the
        # fields are counted after its last ")"; starttime is field 22, state field 3.
        fields = text[text.rindex(b")") + 2:].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _system_tag() -> Optional[str]:
    """12 hex digits naming this boot of this host and our PID namespace, or None when the
    system does not tell them (not Linux): where a (pid, start time) pair means one process."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot = file.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or a number we cannot ask about: keep its file
    return True


def _writer_is_gone(name: str, age: float, tag: Optional[str]) -> bool:
    """Whether the writer of our temporary file `name` (untouched for `age` seconds) is gone:
    at once when it can be looked up here (its pid runs no more, or runs a process started at
    another time); otherwise by the age rules."""
    with_start = _TEMPORARY_WITH_START.fullmatch(name)
    if with_start is not None:
        pid, start, file_tag = int(with_start.group(1)), int(with_start.group(2)), with_start.group(3)
        if tag is not None and file_tag == tag:
            return _start_time(pid) != start
        return age > STALE_SECONDS_WITHOUT_PID  # another host's or container's writer
    named = _TEMPORARY.fullmatch(name)
    if named is not None:
        return age > STALE_SECONDS and not _process_exists(int(named.group(1)))
    return _TEMPORARY_WITHOUT_PID.fullmatch(name) is not None and age > STALE_SECONDS_WITHOUT_PID


def _temporary_prefix() -> str:
    """mkstemp's prefix for a temporary file of this process (see _TEMPORARY_WITH_START)."""
    pid, tag = os.getpid(), _system_tag()
    start = _start_time(pid)
    return f".fastmlp-{pid}-{start}-{tag}-" if start is not None and tag is not None else f".fastmlp-{pid}-"


def remove_stale_temporaries(directory: str, now: Optional[float] = None) -> int:
    """Delete the temporary files killed writers left in `directory`: only regular files of
    ours (our name pattern, owned by this user, not symlinks) whose writer is gone. A file
    that names its writer's pid and start time on this system goes as soon as that process
    no longer runs, whatever its age (a later process with the same pid has another start
    time); one whose writer cannot be looked up here goes once untouched for STALE_SECONDS
    and no process has its pid (STALE_SECONDS_WITHOUT_PID when it names no pid, or names a
    writer of another host or PID namespace). Never raises: a file another process removes or
    a directory we cannot list is skipped.

    Returns
    -------
    int
        The number of files deleted.
    """
    now = time.time() if now is None else now
    tag = _system_tag()
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".fastmlp-") and entry.name.endswith(".tmp")):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            continue
        if _writer_is_gone(entry.name, now - info.st_mtime, tag):
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
        handle, temporary = tempfile.mkstemp(prefix=_temporary_prefix(), suffix=".tmp", dir=directory)
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
