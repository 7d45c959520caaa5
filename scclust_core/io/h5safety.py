"""Refuse HDF5 uploads that are not self-contained, before anything follows their links.

HDF5 lets a file point outside itself in three ways: a dataset's *external storage* (its bytes live in
another file, named by path), an ``ExternalLink`` (an object in another HDF5 file), and a *virtual dataset*
(a view mapped onto datasets in other files). h5py, anndata and scanpy follow all three silently, so an
uploaded ``.h5ad`` or 10x ``.h5`` could make the server read one of its own files as ``X`` and hand the bytes
back in the workspace and the export. An upload is data from a stranger: it must hold everything it declares.

The walk visits links without resolving them (``getlink=True``), so nothing outside the file is opened.
It also bounds the number of objects and the nesting depth: a file with 20,000 tiny ``uns`` entries or
``uns`` nested thousands deep costs anndata tens of seconds and ends in a RecursionError, so it is refused
up front with a message that says what to do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import corrupt

#: Objects (groups, datasets, links) a real h5ad holds: a few per obs/var column, a few hundred in uns (20,000
#: tiny uns entries took anndata 14.5 s and +354 MB to read).
MAX_HDF5_OBJECTS = 10_000
#: Nesting depth of groups: anndata's own layout is at most ~6 deep; uns rarely goes past 10.
MAX_HDF5_DEPTH = 64

_WHY = ("an uploaded file must hold all its data itself, so the server never reads a file it was pointed at; "
        "save the AnnData again from Python (adata.write_h5ad) so the data is copied into the file")


class UnsafeHDF5Error(ValueError):
    """The HDF5 file points outside itself (or is too large a tree to walk); ``reason`` says where."""


@dataclass
class _Walk:
    label: str
    objects: int = 0
    seen: set[int] = field(default_factory=set)


def check_self_contained(path: Path, label: str | None = None) -> None:
    """Raise :class:`UnsafeHDF5Error` if any object in ``path`` refers outside the file.

    Refused: external links, datasets with external storage, virtual datasets, more than
    :data:`MAX_HDF5_OBJECTS` objects, groups nested deeper than :data:`MAX_HDF5_DEPTH`. Soft links are
    kept (they name a path inside the same file) but not followed; everything they can reach is reached
    by hard links or refused.
    """
    import h5py

    walk = _Walk(label or path.name)
    try:
        with h5py.File(path, "r") as f:
            _visit_group(f, "/", 0, walk)
    except UnsafeHDF5Error:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, (MemoryError, RecursionError)):
            raise
        raise corrupt("HDF5 file could not be opened", exc) from exc


def _visit_group(group, path: str, depth: int, walk: _Walk) -> None:
    import h5py

    if depth > MAX_HDF5_DEPTH:
        raise UnsafeHDF5Error(
            f"'{walk.label}' nests groups more than {MAX_HDF5_DEPTH} deep (at '{path}'): no single-cell file "
            "needs that; remove the deeply nested entry (usually in .uns) and save the file again")
    key = hash(group.id)
    if key in walk.seen:  # a hard link back to a group already walked: its content is checked
        return
    walk.seen.add(key)
    for name in group:
        walk.objects += 1
        if walk.objects > MAX_HDF5_OBJECTS:
            raise UnsafeHDF5Error(
                f"'{walk.label}' holds more than {MAX_HDF5_OBJECTS:,} HDF5 objects: reading that many entries "
                "would take minutes; drop the bulky .uns/.obsm entries (keep X, obs and var) and save it again")
        child = f"{path.rstrip('/')}/{name}"
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise UnsafeHDF5Error(
                f"'{walk.label}' is refused: its entry '{child}' is an external link to '{link.path}' in another "
                f"file ('{link.filename}'); {_WHY}")
        if isinstance(link, h5py.SoftLink):
            continue
        obj = group.get(name)
        if isinstance(obj, h5py.Group):
            _visit_group(obj, child, depth + 1, walk)
        elif isinstance(obj, h5py.Dataset):
            _check_dataset(obj, child, walk)


def _check_dataset(dset, path: str, walk: _Walk) -> None:
    if dset.is_virtual:
        sources = sorted({m.file_name for m in dset.virtual_sources()})
        raise UnsafeHDF5Error(
            f"'{walk.label}' is refused: its dataset '{path}' is a virtual dataset mapped onto "
            f"{', '.join(repr(s) for s in sources[:3]) or 'other files'}; {_WHY}")
    n_external = dset.id.get_create_plist().get_external_count()
    if n_external:
        raise UnsafeHDF5Error(
            f"'{walk.label}' is refused: its dataset '{path}' keeps its bytes in {n_external} external file(s) "
            f"(HDF5 external storage) instead of inside the upload; {_WHY}")
