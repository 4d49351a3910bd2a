"""The files under DATA as a tree of folders, where a zip archive is a folder too; non-images counted, not kept.

Only names are looked at: no image is opened, a zip's central directory is the only thing read, and nothing is
stat'ed beyond what os.scandir already knows, so 25,000 files take a fraction of a second and a million stay
practical. Deciding what the folders mean (splits, classes) is discovery's job.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field

from analysis.data.names import make_id_part

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError)
_SYSTEM_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", "__macosx"})
_UNSAFE_MEMBER = re.compile(r"^([/\\]|[A-Za-z]:)|(^|[/\\])\.{0,2}([/\\]|$)")  # absolute, drive, '', '.', '..'
_MAX_EXAMPLES = 20


@dataclass(eq=False)
class Folder:
    name: str  # as the file system gives it (surrogate-escaped); a zip keeps its '.zip'
    rel: str  # image_id prefix: path from DATA with '/', ending in '/' (or "" for DATA), each name
    # through analysis.data.names.make_id_part
    path: str  # the folder's absolute path; inside a zip, the zip's path
    member: str | None  # member-name prefix inside a zip; None on disk
    is_zip: bool = False
    images: list[str] = field(default_factory=list)  # names as the file system or the zip gives them
    folders: dict[str, "Folder"] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)  # image name -> real path, for symlinks inside DATA
    total: int = 0  # images in the whole subtree
    kind: str | None = None  # the layout, memoized by discovery: parents ask about their children first


class Skips:
    """Files found but not analyzed: a count per reason and the first few (path relative to DATA, reason)."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.examples: list[tuple[str, str]] = []

    def add(self, rel: str, reason: str, n: int = 1) -> None:
        self.counts[reason] += n
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append((rel, reason))


def skip_reason(name: str) -> str | None:
    """Why a file called `name` is not analyzed, or None when it is an image (by name: contents are not read)."""
    low = name.lower()
    if low in _SYSTEM_NAMES or low.startswith("._"):
        return "system file"
    if low.startswith("."):
        return "hidden file"
    if os.path.splitext(low)[1] not in IMAGE_EXTENSIONS:
        return "not an image extension"
    return None


def count_images(folder: Folder) -> int:
    folder.total = len(folder.images) + sum(count_images(f) for f in folder.folders.values())
    return folder.total


def read_zip_tree(name: str, path: str, rel: str, skips: Skips) -> Folder:
    """The member tree of the zip at `path` (image_ids start with `rel`); raises one of ZIP_ERRORS."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    top = Folder(name, rel, path, "", is_zip=True)
    seen: set[str] = set()
    for info in infos:
        m = info.filename
        if m.endswith("/"):
            continue
        parts = m.split("/")
        if _UNSAFE_MEMBER.search(m):
            reason = "unsafe zip member path"
        elif m in seen:  # a zip may repeat a name; ids must stay unique and read_bytes would get the last one
            reason = "duplicate zip member"
        elif (info.external_attr >> 16) & 0o170000 == 0o120000:
            reason = "symlink in zip"
        elif any(p.lower() == "__macosx" for p in parts[:-1]):
            reason = "system file"
        elif any(p.startswith(".") for p in parts[:-1]):
            reason = "hidden file"
        elif parts[-1].lower().endswith(".zip"):
            reason = "zip inside a zip (not read)"
        else:
            reason = skip_reason(parts[-1])
        if reason:
            skips.add(rel + make_id_part(m), reason)
            continue
        seen.add(m)
        node = top
        for i, p in enumerate(parts[:-1]):
            child = node.folders.get(p)
            if child is None:
                prefix = "/".join(parts[: i + 1]) + "/"
                child = node.folders[p] = Folder(p, rel + make_id_part(prefix), path, prefix)
            node = child
        node.images.append(parts[-1])
    return top


def read_folder_tree(root: str, skips: Skips) -> Folder:
    """The tree under the folder `root` (absolute), zips included; raises OSError when `root` cannot be listed.

    Every path in it is a real path under realpath(root), with no link on the way (a link inside DATA is replaced
    by the target it was checked against), so that reading can refuse to follow any link (analysis.data.sources).
    """
    real = os.path.realpath(root)
    top = Folder(os.path.basename(root), "", real, None)
    _Walker(real, skips).run(top)
    return top


class _Walker:
    """Walks with os.scandir; symlinks are followed only to targets inside DATA, and each real folder only once."""

    def __init__(self, root_real: str, skips: Skips):
        self.root_real = root_real
        self.inside_prefix = root_real.rstrip(os.sep) + os.sep
        self.skips = skips
        self.seen: set[str] = set()
        # Symlinked folders wait until the real tree is walked, so that a folder is found under its own name
        # and a link to it counts as a duplicate, whatever the names sort as.
        self.deferred: list[tuple[Folder, str, str, str, str]] = []

    def run(self, top: Folder) -> None:
        self.walk(top, self.root_real)
        while self.deferred:
            self.subfolder(*self.deferred.pop(0))

    def walk(self, folder: Folder, real: str) -> None:
        self.seen.add(real)
        try:
            with os.scandir(folder.path) as it:
                entries = sorted(it, key=lambda e: e.name)  # scandir order is the filesystem's: not deterministic
        except OSError:
            if not folder.rel:
                raise
            self.skips.add(folder.rel, "unreadable folder")
            return
        for e in entries:
            rel = folder.rel + make_id_part(e.name)
            if e.is_symlink():
                target = os.path.realpath(e.path)
                if not (target == self.root_real or target.startswith(self.inside_prefix)):
                    self.skips.add(rel, "symlink outside DATA")
                elif os.path.isdir(target):
                    self.deferred.append((folder, e.name, e.path, target, rel))
                elif os.path.isfile(target):
                    # Read through the checked target, never the link: a link swapped later cannot lead outside.
                    self.file(folder, e.name, target, rel)
                else:
                    self.skips.add(rel, "broken symlink")
            elif e.is_dir(follow_symlinks=False):
                self.subfolder(folder, e.name, e.path, os.path.join(real, e.name), rel)
            elif e.is_file(follow_symlinks=False):
                self.file(folder, e.name, e.path, rel)
            else:
                self.skips.add(rel, "not a regular file")

    def subfolder(self, folder: Folder, name: str, path: str, real: str, rel: str) -> None:
        low = name.lower()
        if low in _SYSTEM_NAMES or low.startswith("."):
            # Counted once, not listed: a .git or a cache folder can hold more files than the dataset.
            self.skips.add(rel + "/", "hidden or system folder (not searched)")
        elif real in self.seen:
            self.skips.add(rel + "/", "symlink to a folder already found")
        else:
            child = folder.folders[name] = Folder(name, rel + "/", real, None)
            self.walk(child, real)

    def file(self, folder: Folder, name: str, path: str, rel: str) -> None:
        if path != os.path.join(folder.path, name):
            folder.targets[name] = path
        if name.lower().endswith(".zip") and not name.startswith("."):
            try:
                folder.folders[name] = read_zip_tree(name, path, rel + "/", self.skips)
            except ZIP_ERRORS:
                self.skips.add(rel, "unreadable zip")
        elif reason := skip_reason(name):
            self.skips.add(rel, reason)
        else:
            folder.images.append(name)
