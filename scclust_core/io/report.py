"""What the reader decided on the user's behalf, kept with the data (``adata.uns['scclust_read']``).

A table read as genes × cells and transposed, the column used as names, the layer used as counts: each
choice is a *note* the Data page and the CLI print ("rows read as cells because …"), so nothing is guessed
silently. Readers call :func:`note`; :func:`read` collects the notes of one read with :func:`report_scope`.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["ReadReport", "read_report", "UNS_KEY"]

UNS_KEY = "scclust_read"

_notes: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("scclust_io_notes", default=None)


@dataclass
class ReadReport:
    """How a file was read: its format and every choice made while reading it (one sentence each)."""

    source: str
    format: str
    notes: list[str] = field(default_factory=list)

    def to_uns(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "notes": list(self.notes)}

    def to_text(self) -> str:
        return f"Read '{self.source}' as {self.format}." + "".join(f"\n- {n}" for n in self.notes)


def read_report(adata) -> ReadReport | None:
    """The :class:`ReadReport` stored on ``adata`` by :func:`scclust_core.io.read`, if any."""
    d = adata.uns.get(UNS_KEY) if hasattr(adata, "uns") else None
    if not isinstance(d, dict) or "format" not in d:
        return None
    notes = d.get("notes", [])
    notes = [str(n) for n in (notes.tolist() if hasattr(notes, "tolist") else notes)]
    return ReadReport(source=str(d.get("source", "")), format=str(d["format"]), notes=notes)


def note(text: str) -> None:
    """Record one choice made while reading (no-op outside :func:`report_scope`)."""
    notes = _notes.get()
    if notes is not None and text not in notes:
        notes.append(text)


@contextlib.contextmanager
def report_scope() -> Iterator[list[str]]:
    token = _notes.set([])
    try:
        yield _notes.get()  # type: ignore[misc]
    finally:
        _notes.reset(token)
