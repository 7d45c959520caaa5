"""Test data helpers shared by several test files (importable as ``tests.helpers`` or ``helpers``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def synthetic_counts(n_cells: int = 150, n_genes: int = 60, k: int = 3, seed: int = 0, strength: float = 5.0) -> AnnData:
    """NB counts with per-cluster up-regulated marker blocks (CSR float32 integers, categorical labels)."""
    rng = np.random.default_rng(seed)
    lab = np.arange(n_cells) % k
    rng.shuffle(lab)
    mu = np.tile(rng.gamma(2.0, 0.5, n_genes), (n_cells, 1))
    block = n_genes // (2 * k)
    for c in range(k):
        mu[lab == c, c * block:(c + 1) * block] *= strength
    mu *= rng.lognormal(0.0, 0.3, n_cells)[:, None]
    x = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{c}" for c in lab])},
                       index=[f"cell{i}" for i in range(n_cells)])
    ad = AnnData(sp.csr_matrix(x), obs=obs)
    ad.var_names = [f"gene{i}" for i in range(n_genes)]
    return ad


class Recorder:
    """Test callback: records epoch logs, snapshot epochs, the end status, and stops after ``stop_after`` epochs.

    ``logs`` holds the EpochLogs, ``epochs`` their epoch numbers, ``snaps`` the epochs of snapshots taken at an
    epoch's end, ``extra`` (alias ``extra_snaps``) those taken outside one (epoch 0 and the final one).
    """

    def __init__(self, stop_after: int | None = None):
        self.logs: list = []
        self.epochs: list[int] = []
        self.snaps: list[int] = []
        self.extra: list[int] = []
        self.extra_snaps = self.extra
        self.stop_after = stop_after
        self.ended: str | None = None

    def on_train_begin(self, info) -> None:
        pass

    def on_epoch_end(self, log, snapshot) -> None:
        self.logs.append(log)
        self.epochs.append(log.epoch)
        if snapshot is not None:
            self.snaps.append(snapshot.epoch)

    def on_snapshot(self, snapshot) -> None:
        self.extra.append(snapshot.epoch)

    def on_train_end(self, result) -> None:
        self.ended = result.status

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.logs) >= self.stop_after


def workspace_with_run(ws, adata: AnnData, method: str, config, *, view: str = "umap", timeout: float = 120):
    """``ws`` (a Workspace) with ``adata`` (reference 'cell_type') and one finished ``method`` run; returns
    ``(ws, run_id)``. A stand-in 2-D ``view`` (the embedding's first two columns) is cached so page tests do not
    spend time computing UMAP (test_core_embed tests the real one)."""
    from scclust_core.jobs import TrainingJob

    ws.set_dataset(adata.copy(), "tiny synthetic")
    ws.set_reference("cell_type")
    job = TrainingJob(adata, method, config, runs_root=ws.runs_dir, label_key="cell_type", workspace=ws.id).start()
    assert job.join(timeout) and job.status == "completed", job.error
    emb = job.result.full_embedding()
    ws.write_cache(f"{job.run_id}_{view}.npy", emb[:, :2].astype(np.float32))  # checked cache (see Workspace)
    return ws, job.run_id


def md_plain(text: str) -> str:
    """The characters a reader sees in Markdown source ``text``: backslash escapes of ASCII punctuation removed
    (the app escapes data-derived text with ``scclust_core.ui.common.md_text``)."""
    import re

    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(text))


#: Hostile strings for the CSV/Markdown tests. "evil-" marks every URL, so a browser test can tell a fetch of one.
FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1,2)", "-2+3", "@SUM(1,1)", '=HYPERLINK("http://127.0.0.1:9/evil-link","x")',
            "\tTAB", "\rCR"]
MD_IMAGE = "![x](http://127.0.0.1:9/evil-p.png)"
MD_PAYLOADS = [MD_IMAGE, "[click](javascript:alert(1))", "**bold** _it_ `code` <b>b</b> $x$ # h | t ~~s~~"]
#: anndata refuses "/" in obs column names: the column's image is a relative URL (fetched from the app server)
HOSTILE_COLUMN = "ref ![c](evil-col.png) [click](javascript:alert(1)) **b**"
HOSTILE_DATASET_NAME = f"{MD_IMAGE} **bold** [click](javascript:alert(1)).h5ad"


def hostile_adata(adata: AnnData) -> AnnData:
    """A copy of ``adata`` (with obs['cell_type']) whose first cell and gene names are spreadsheet formulas and
    Markdown, with a reference column ``HOSTILE_COLUMN`` whose categories are Markdown (one per cell type)."""
    ad = adata.copy()
    names = FORMULAS + MD_PAYLOADS
    ad.obs_names = names + list(ad.obs_names[len(names):])
    ad.var_names = names + list(ad.var_names[len(names):])
    types = sorted(ad.obs["cell_type"].astype(str).unique())
    cats = (MD_PAYLOADS + FORMULAS)[:len(types)]
    ad.obs[HOSTILE_COLUMN] = pd.Categorical(ad.obs["cell_type"].astype(str).map(dict(zip(types, cats))))
    return ad


def sample_file_bytes(ad: AnnData, fmt: str) -> bytes:
    """``ad`` as the bytes of an upload: ``h5ad``, ``csv`` (cells × genes, integer counts) or ``zip`` (a zipped
    10x matrix folder: matrix.mtx, features.tsv, barcodes.tsv)."""
    import io
    import tempfile
    import zipfile
    from pathlib import Path

    import scipy.io

    if fmt == "h5ad":
        with tempfile.TemporaryDirectory() as d:
            ad.write_h5ad(Path(d) / "x.h5ad")
            return (Path(d) / "x.h5ad").read_bytes()
    if fmt == "csv":
        x = ad.X.toarray() if sp.issparse(ad.X) else np.asarray(ad.X)
        return pd.DataFrame(x.astype(np.int64), index=ad.obs_names, columns=ad.var_names).to_csv().encode()
    m = io.BytesIO()
    scipy.io.mmwrite(m, sp.coo_matrix(sp.csr_matrix(ad.X).T.astype(np.int64)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("sample/matrix.mtx", m.getvalue())
        z.writestr("sample/features.tsv", "".join(f"{g}\t{g}\tGene Expression\n" for g in ad.var_names))
        z.writestr("sample/barcodes.tsv", "".join(f"{c}\n" for c in ad.obs_names))
    return buf.getvalue()


def batch_split_samples(n_cells: tuple[int, ...] = (150, 130, 120), n_genes: int = 300) -> list[AnnData]:
    """One synthetic sample per entry (each its own gene profile, so clusters split by sample: a batch effect),
    the third without its last five genes (a file that lacks some genes)."""
    parts = [synthetic_counts(n, n_genes, 3, seed=10 + i) for i, n in enumerate(n_cells)]
    for i, p in enumerate(parts):
        p.obs_names = [f"s{i}_{c}" for c in p.obs_names]
    if len(parts) > 2:
        parts[2] = parts[2][:, : n_genes - 5].copy()
    return parts
