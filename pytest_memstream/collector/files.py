"""Writing a report file (JSON, HTML, baseline): whole or not at all, and only over a file.

Every report is written to a temporary file beside its destination and renamed over it,
so that a reader sees the old file or the whole new one.  A renaming writer must itself
do what ``open()`` does for a plain writer: follow a symlink to the file it names (the
link stays), leave alone what is not a regular file (a FIFO, a device such as
``/dev/full``: renaming over it would replace it), and create the file with mode
``0666`` less the umask, like every file pytest writes.  Nothing here knows about pytest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

#: Symlinks followed before giving up, as the kernel does (its ELOOP limit).
_MAX_LINKS = 40
#: Names tried for the temporary file before giving up (each one is random).
_MAX_TRIES = 100


class NotAFile(OSError):
    """The destination exists and is not a regular file: it is left as it is."""


def write_atomically(path: Path, pieces: Iterable[str], mode: int = 0o666) -> None:
    """Write ``pieces`` to ``path`` (through a symlink, to its target) atomically.

    Raises NotAFile for a destination that is not a regular file, and OSError naming
    ``path`` (not the temporary file) for anything else that goes wrong.
    """
    target = _target(path)
    try:
        existing: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise _naming(exc, path) from None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        kind = _kind(existing.st_mode)
        raise NotAFile(f"{_described(path, target)} is {kind}: left as it is")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _create_beside(target, mode)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            for piece in pieces:
                file.write(piece)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def write_json(path: Path, document: object) -> None:
    """Write ``document`` as compact JSON to ``path`` atomically."""
    # One dumps and one write: json.dump's many small writes are 3x slower.
    write_atomically(path, [json.dumps(document, separators=(",", ":")) + "\n"])


def unusable(path: Path) -> str | None:
    """Why no report can be written to ``path``, or None where one can, as far as can be
    told before the run: a directory, a parent that is not a directory or cannot be
    created or written in.  A FIFO or a device is not unusable here: it is refused, with
    a warning, when the report is written."""
    try:
        target = _target(path)
    except NotAFile as exc:
        return str(exc)
    where = "" if target == path else f" (the target of its symlink, {target})"
    if target.is_dir():
        return f"it is a directory{where}"
    if target.exists():
        return _not_writable_in(target.parent)
    ancestor = target.parent
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling link where a directory must be created
            return f"{ancestor} is a symlink to nothing, where a directory must be created"
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory, so the file cannot be created under it"
    return _not_writable_in(ancestor)


def _not_writable_in(directory: Path) -> str | None:
    # A rename needs a new file in the directory, not only a writable destination.
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    return f"cannot create files in {directory}"


def _target(path: Path) -> Path:
    """The file a write to ``path`` lands in: its symlinks followed, as ``open()`` would."""
    for _ in range(_MAX_LINKS):
        try:
            link = os.readlink(path)
        except OSError:  # not a link (or not there): the write itself says what is wrong
            return path
        _check_may_follow(path)
        path = path.parent / link
    raise NotAFile(f"{path}: too many levels of symlinks")


def _check_may_follow(link: Path) -> None:
    # What fs.protected_symlinks makes open() do: in a sticky directory that anyone can
    # write to (/tmp), follow a link only if it is ours or the directory owner's; without
    # this, another user's link could make a root run overwrite any file it names.
    try:
        directory, owner = os.stat(link.parent), os.lstat(link).st_uid
    except OSError:
        return
    shared = directory.st_mode & stat.S_ISVTX and directory.st_mode & stat.S_IWOTH
    if shared and owner not in (os.geteuid(), directory.st_uid):
        raise NotAFile(
            f"{link} is another user's symlink in a shared directory: not followed, left as it is"
        )


def _create_beside(target: Path, mode: int) -> tuple[str, int]:
    """A new temporary file in ``target``'s directory (the kernel applies the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(_MAX_TRIES):
        tmp = str(target.parent / f".{target.name}.{os.urandom(6).hex()}.tmp")
        try:
            return tmp, os.open(tmp, flags, mode)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name for a temporary file", str(target.parent))


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` about ``path``: the user named it, not the temporary file."""
    if exc.errno is None or isinstance(exc, NotAFile):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def _described(path: Path, target: Path) -> str:
    return str(path) if target == path else f"{path} (a symlink to {target})"


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")
