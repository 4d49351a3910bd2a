"""Where an image's bytes are, and reading them: a plain file or a member of a zip archive read in place."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRecord:
    image_id: str            # path relative to DATA with '/' (zip: member path, under the zip's name in a parent)
    split: str | None        # which part of a parent folder (train, test1, ...), else None
    label: str | None        # class name, lower-cased; None when unlabeled
    path: str                # absolute path of the file, or of the zip archive when `member` is set
    member: str | None = None  # member name inside the zip archive


class SourceError(Exception):
    """The bytes could not be read; `reason` is the short text stored in the `error` column."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# One open ZipFile per (process, archive): DataLoader workers are separate processes and must not share handles.
_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    key = (os.getpid(), path)
    zf = _ZIPS.get(key)
    if zf is None:
        zf = _ZIPS[key] = zipfile.ZipFile(path)
    return zf


def read_bytes(record: ImageRecord, max_bytes: int) -> bytes:
    """The raw bytes of one image, refusing files over `max_bytes` before reading them."""
    try:
        if record.member is None:
            size = os.stat(record.path).st_size
            if size > max_bytes:
                raise SourceError("too large")
            with open(record.path, "rb") as f:
                return f.read(max_bytes + 1)
        zf = _open_zip(record.path)
        info = zf.getinfo(record.member)
        if info.file_size > max_bytes:
            raise SourceError("too large")
        with zf.open(info) as f:
            return f.read(max_bytes + 1)
    except SourceError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as e:
        raise SourceError(f"unreadable zip member ({type(e).__name__})") from None
    except (OSError, KeyError) as e:
        raise SourceError(f"unreadable ({getattr(e, 'strerror', None) or type(e).__name__})") from None
