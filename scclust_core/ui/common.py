"""Small page helpers: error guard, empty-state messages, figure download buttons, text from the data."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback

import streamlit as st

from ..jobs import friendly_error

logger = logging.getLogger(__name__)


ROUTER_FLAG = "_via_router"
ROUTER_FIX_TRIED = "_router_fix_tried"

#: Characters that Streamlit's Markdown (GFM, LaTeX, its :color[…] directives) may read as markup. ":" too: GFM
#: turns a bare ``http://…`` into a link whose text keeps the backslashes of the escapes inside it; ``http\://``
#: (like ``www\.``, ``a@b\.c``) is no autolink.
MD_SPECIAL = "\\`*_{}[]()#+-.!|<>~$&:"
_MD_SPECIAL_RE = re.compile("([" + re.escape(MD_SPECIAL) + "])")
_NEWLINES_RE = re.compile(r"\r\n|\r|\n")


def md_text(value) -> str:
    """``value`` as text for Markdown: shown as the same characters, never as markup.

    Every string that comes from the data (file and dataset names, gene and cell names, annotation columns and
    categories, layer names, error messages that quote them) goes through this before it is put into
    ``st.markdown``/``caption``/``info``/``warning``/``error``/``success``/``subheader``, a widget, expander,
    status or metric label, a tooltip, or radio options (all render Markdown): otherwise a category named
    ``![x](http://host/p.png)`` makes every browser showing the page fetch that URL, and ``[click](javascript:…)``
    or ``**bold**`` render as a link or markup. Each Markdown special character gets a backslash (CommonMark
    shows a backslash-escaped ASCII punctuation character literally); line breaks become spaces, so that the
    text cannot start a heading, list, table or code block on a line of its own. Selectbox and multiselect
    options and dataframes are shown as plain text by Streamlit and need no escaping.
    """
    text = _NEWLINES_RE.sub(" ", str(value))
    return _MD_SPECIAL_RE.sub(r"\\\1", text)


def page_setup() -> None:
    """Call first in every page: make sure the page runs inside the app.py frame (router, sidebar, workspace).

    Streamlit runs the first script of a fresh server in its old "pages/ folder" mode when the app has a
    ``pages/`` directory, until some run calls ``st.navigation``. A deep link opened right after a restart
    (``/explore?ws=...``) would then run this page alone. In that case switch the server to ``st.navigation``
    mode and rerun once, which goes through app.py and keeps the deep link. (Streamlit's AppTest always runs
    in the old mode and switches pages that way; tests set ``SCCLUST_APPTEST=1`` to render pages directly.)
    """
    from . import state

    if st.session_state.get(ROUTER_FLAG):
        return
    state.init()
    if os.environ.get("SCCLUST_APPTEST") or st.session_state.get(ROUTER_FIX_TRIED):
        return  # render the page on its own (the workspace is open); the next run goes through app.py
    st.session_state[ROUTER_FIX_TRIED] = True
    try:
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
    except Exception:  # noqa: BLE001 - private API: without it the page still renders on its own
        return
    st.rerun()


@contextlib.contextmanager
def guard(what: str):
    """Show any error of the block as a clear message in the page (the app keeps working)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the page must never turn into a traceback
        logger.exception("%s failed", what)
        st.error(f"**{what} failed.** {md_text(friendly_error(exc))}")
        details = "".join(traceback.format_exception(exc))[-4000:]
        try:
            with st.expander("Technical details"):
                st.code(details)
        except Exception:  # noqa: BLE001 - e.g. inside another expander (Streamlit does not nest them)
            st.caption(f"{type(exc).__name__} (details in the server log)")


def need_data() -> bool:
    """True when a dataset is loaded; otherwise show where to get one."""
    from . import state

    if state.adata() is None:
        st.info("No data yet. Open the **Data** page to upload a file or open the PBMC demo.")
        st.page_link("pages/1_data.py", label="Go to Data", icon=":material/upload_file:")
        return False
    return True


def need_run() -> bool:
    from . import state

    if not state.runs(finished_only=True):
        st.info("No finished clustering run on this dataset yet. Start one on the **Cluster** page.")
        st.page_link("pages/2_cluster.py", label="Go to Cluster", icon=":material/hub:")
        return False
    return True


def figure_downloads(fig, name: str, key: str) -> None:
    """PNG/SVG/HTML download of a figure, rendered only when asked (static export starts a headless browser)."""
    from ..export import figure_bytes

    cols = st.columns([1, 1, 1, 3])
    fmt = cols[0].selectbox("Format", ["png", "svg", "html"], key=f"{key}_fmt", label_visibility="collapsed")
    if cols[1].button("Prepare file", key=f"{key}_prep"):
        with st.spinner(f"Rendering {fmt.upper()}…"):
            st.session_state[f"{key}_file"] = figure_bytes(fig, fmt)
    got = st.session_state.get(f"{key}_file")
    if got:
        data, mime, ext, note = got
        cols[2].download_button(f"Download .{ext}", data, file_name=f"{name}.{ext}", mime=mime, key=f"{key}_dl")
        if note:
            st.warning(note)


def show_table(df, **kwargs):
    """``st.dataframe`` of a spreadsheet-safe copy: its toolbar offers the table as a CSV download, so a cell that
    starts like a formula (``=``, ``+``, ``-``, ``@``) is shown and downloaded with a leading ``'``
    (:func:`scclust_core.csv_safe.safe_frame`); numbers are untouched."""
    from ..csv_safe import safe_frame

    return st.dataframe(safe_frame(df) if hasattr(df, "columns") else df, **kwargs)
