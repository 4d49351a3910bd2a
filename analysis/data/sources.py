"""Where an image's bytes are, and reading them: a plain file or a member of a zip archive read in place."""

from __future__ import annotations

import contextlib
import errno
import lzma
import os
import stat
import threading
import zipfile
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRecord:
    image_id: str  # path relative to DATA with '/' (zip: member path, under the zip's name in a parent)
    split: str | None  # which part of a parent folder (train, test1, ...), else None
    label: str | None  # class name, lower-cased; None when unlabeled
    path: str  # absolute path of the file, or of the zip archive when `member` is set
    member: str | None = None  # member name inside the zip archive


class SourceError(Exception):
    """The bytes could not be read; `reason` is the short text stored in the `error` column."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_NONBLOCK: a file swapped for a FIFO must not block the open; fstat then says it is not a regular file.
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# What zipfile and its decompressors raise on a damaged or rewritten archive (RuntimeError: an encrypted member).
_ZIP_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    EOFError,
    RuntimeError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
)

# One open ZipFile per (process, thread, archive): DataLoader workers are separate processes and must not share
# handles, and the threads that decode a batch (ImageDataset.__getitems__) must not share one ZipFile either: its
# count of open members is not thread-safe.
_ZIPS: dict[tuple[int, int, str], zipfile.ZipFile] = {}


def _open_zip(path: str, root: str | None) -> zipfile.ZipFile:
    key = (os.getpid(), threading.get_ident(), path)
    zf = _ZIPS.get(key)
    if zf is None:
        f = _open_checked(path, root)
        try:
            zf = _ZIPS[key] = zipfile.ZipFile(f)
        except BaseException:
            f.close()  # a damaged archive is tried again for each member: no descriptor may stay behind
            raise
    return zf


def read_bytes(record: ImageRecord, max_bytes: int, root: str | None = None) -> bytes:
    """The raw bytes of one image, refusing files over `max_bytes` before reading them.

    Files change between discovery and decoding on a live disk; each way ends as its own reason: `vanished` (deleted
    or renamed), `truncated` (shorter than it was when opened), `replaced by a symlink` (never followed: a link
    found at discovery was resolved and checked then, and its target is what is read), `not a regular file`.
    With `root` (the real path of DATA), no link is followed on the way from it either: a folder swapped for a link
    to elsewhere after discovery is caught too.
    """
    if record.member is None:
        return _read_file(record.path, max_bytes, root)
    return _read_member(record.path, record.member, max_bytes, root)


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "vanished"
    if e.errno == errno.ELOOP:
        return "replaced by a symlink"
    if isinstance(e, (IsADirectoryError, NotADirectoryError)):
        return "not a regular file"
    return f"unreadable ({e.strerror or type(e).__name__})"


def _open_checked(path: str, root: str | None):
    """The file at `path` open for reading, following no link on the way from `root` (the real DATA; every path
    discovery makes is a real path under it), so nothing swapped in after discovery can lead outside DATA."""
    try:
        if root is None or path == root:
            fd = os.open(path, _FILE_FLAGS)
        else:
            fd = _open_beneath(root, os.path.relpath(path, root).split(os.sep))
    except OSError as e:
        raise SourceError(_os_reason(e)) from None
    try:
        return os.fdopen(fd, "rb")
    except OSError as e:  # a folder now: io refuses it, and leaves the descriptor it was given open
        with contextlib.suppress(OSError):
            os.close(fd)
        raise SourceError(_os_reason(e)) from None


def _open_beneath(root: str, parts: list[str]) -> int:
    if parts[0] == os.pardir:
        raise OSError(errno.ELOOP, "outside DATA")
    dir_fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
            except NotADirectoryError:  # Linux's answer for a link there too: say which it is
                if stat.S_ISLNK(os.lstat(part, dir_fd=dir_fd).st_mode):
                    raise OSError(errno.ELOOP, "a folder was replaced by a symlink") from None
                raise
            os.close(dir_fd)
            dir_fd = next_fd
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _read_file(path: str, max_bytes: int, root: str | None) -> bytes:
    f = _open_checked(path, root)
    try:
        with f:
            st = os.fstat(f.fileno())  # of what was opened: no window between a stat and the open
            if not stat.S_ISREG(st.st_mode):
                raise SourceError("not a regular file")
            if st.st_size > max_bytes:
                raise SourceError("too large")
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise SourceError(_os_reason(e)) from None
    if len(data) < st.st_size:
        raise SourceError("truncated")
    return data


def _read_member(path: str, member: str, max_bytes: int, root: str | None) -> bytes:
    try:
        zf = _open_zip(path, root)
        info = zf.getinfo(member)
        if info.file_size > max_bytes:
            raise SourceError("too large")
        with zf.open(info) as f:
            return f.read(max_bytes + 1)
    except KeyError:
        raise SourceError("vanished (not in the zip any more)") from None
    except OSError as e:
        raise SourceError(
            _os_reason(e) if isinstance(e, FileNotFoundError) else f"unreadable zip ({e.strerror or type(e).__name__})"
        ) from None
    except _ZIP_MEMBER_ERRORS as e:
        # An archive rewritten or damaged after discovery: each member says so, in its own row.
        raise SourceError(f"unreadable zip member ({type(e).__name__})") from None
