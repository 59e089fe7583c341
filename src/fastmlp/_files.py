"""Writing files so that a destination is never left half-written: the content goes to a
temporary file beside it, which is renamed into place only once complete.
"""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def write_atomically(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

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
    try:
        handle, temporary = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=directory)
    except OSError as error:
        raise type(error)(error.errno, f"cannot write {path!r}: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
