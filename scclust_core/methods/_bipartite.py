"""The graph machinery (cell–gene bipartite graph, HGT sampler, heterogeneous GraphSAGE encoder) in plain
numpy/torch. docs/methods.md §4.2–§4.4, §4.9:

- :class:`BipartiteGraph`: one unweighted edge per non-zero raw count, stored as two CSR neighbour lists
  (genes of each cell = in-neighbours of a cell for ``gene→cell``; cells of each gene for ``cell→gene``).
- :func:`hgt_sample`: a vectorised re-implementation of ``torch_sparse.hgt_sample`` (torch-sparse
  0.6.12–0.6.18, ``MAX_NEIGHBORS = 50``) as PyG's ``HGTLoader`` calls it for scGPCL: seeds = cells, budgets
  filled from at most 50 uniformly chosen neighbours per new node (weight ``1/min(deg, 50)``), nodes drawn
  without replacement with probability ∝ budget², one hop per entry of ``num_samples`` for each node type,
  then edges rebuilt per relation with a fresh "at most 50 in-neighbours" cap per destination node.
  Sampling without replacement ∝ w is done with exponential keys (Efraimidis–Spirakis), which gives the same
  distribution of ordered draws as ``torch.multinomial(w, n, replacement=False)``. All randomness comes from
  the ``numpy.random.Generator`` passed in, so a seed fixes the subgraph.
- :class:`BipartiteSAGEEncoder`: two ``SAGEConv``-mean layers per relation (aggregated path with bias,
  root path without), ``BatchNorm1d`` per node type, **no nonlinearity**; the second gene update is skipped
  (its output is never used by scGPCL, and its parameters never receive a gradient).

Mean aggregation uses a sparse ``(n_dst × n_src)`` operator with ``1/in-degree`` values (rows without
edges are zero, like PyG's mean aggregation); when the output is narrower than the input the source
features are projected first (``M @ (x Wᵀ) + b`` = ``W (M x) + b``, exact).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn

__all__ = ["MAX_NEIGHBORS", "BipartiteGraph", "Subgraph", "hgt_sample", "sample_without_replacement", "cap_rows",
           "capped_neighbours", "mean_operator", "BipartiteSAGEEncoder"]

#: torch_sparse's ``MAX_NEIGHBORS`` (budget updates and edge reconstruction)
MAX_NEIGHBORS = 50


# ------------------------------------------------------------------------------------------------- graph
class BipartiteGraph:
    """Cells × genes graph with one edge per non-zero count (same edge set in both directions)."""

    def __init__(self, counts):
        a = sp.csr_matrix(counts)
        a.eliminate_zeros()
        a = sp.csr_matrix((np.ones_like(a.indices, dtype=np.int8), a.indices, a.indptr), shape=a.shape)
        a.sort_indices()
        at = a.T.tocsr()
        at.sort_indices()
        self.n_cells, self.n_genes = a.shape
        #: genes of each cell (in-neighbours of a cell for the relation gene→cell)
        self.cell_ptr = a.indptr.astype(np.int64)
        self.cell_nbr = a.indices.astype(np.int64)
        #: cells of each gene (in-neighbours of a gene for the relation cell→gene)
        self.gene_ptr = at.indptr.astype(np.int64)
        self.gene_nbr = at.indices.astype(np.int64)

    @property
    def n_edges(self) -> int:
        return int(self.cell_nbr.size)

    def genes_of(self, cell: int) -> np.ndarray:
        return self.cell_nbr[self.cell_ptr[cell]:self.cell_ptr[cell + 1]]

    def cells_of(self, gene: int) -> np.ndarray:
        return self.gene_nbr[self.gene_ptr[gene]:self.gene_ptr[gene + 1]]


@dataclass
class Subgraph:
    """A sampled subgraph: global ids (seeds first) and local edge lists ``(src, dst)`` per relation."""

    cells: np.ndarray  # int64 [n_c]; the first n_seeds are the seed cells, in order
    genes: np.ndarray  # int64 [n_g]
    n_seeds: int
    gc_src: np.ndarray  # gene→cell edges: local gene index
    gc_dst: np.ndarray  # local cell index
    cg_src: np.ndarray  # cell→gene edges: local cell index
    cg_dst: np.ndarray  # local gene index


def _gather(ptr: np.ndarray, nbr: np.ndarray, rows: np.ndarray):
    """Concatenated neighbour lists of ``rows``: (position of the row in ``rows``, neighbour, degree per row)."""
    starts = ptr[rows]
    deg = ptr[rows + 1] - starts
    total = int(deg.sum())
    row_pos = np.repeat(np.arange(len(rows), dtype=np.int64), deg)
    first = np.cumsum(deg) - deg
    offs = np.arange(total, dtype=np.int64) - np.repeat(first, deg)
    return row_pos, nbr[np.repeat(starts, deg) + offs], deg


def cap_rows(row_pos: np.ndarray, deg: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Keep-mask choosing, for every row longer than ``cap``, ``cap`` entries uniformly without replacement.

    ``row_pos`` must be sorted (entries grouped by row, as :func:`_gather` returns them). Each entry of a long
    row gets a U(0, 1) key and the ``cap`` smallest keys of the row are kept (a uniform random subset). Only
    entries with a key below ``min(1, 2·cap/deg)`` are sorted; a row with fewer than ``cap`` such entries (rare)
    sorts all of its entries, so the result is exact.
    """
    keep = np.ones(row_pos.size, dtype=bool)
    big = deg > cap
    if not big.any():
        return keep
    idx = np.flatnonzero(big[row_pos])
    rp = row_pos[idx]
    u = rng.random(idx.size)
    surv = u < np.minimum(1.0, 2.0 * cap / deg)[rp]
    short = np.bincount(rp[surv], minlength=deg.size) < cap
    surv |= short[rp]
    idx, rp, u = idx[surv], rp[surv], u[surv]
    order = np.argsort(rp + 0.5 * u)  # rows stay grouped, in the same places; sorted by key inside each row
    row_start = np.r_[0, np.flatnonzero(np.diff(rp)) + 1]
    start_of = np.repeat(row_start, np.diff(np.r_[row_start, rp.size]))
    rank = np.arange(rp.size) - start_of  # rank of each sorted entry within its row
    sub_keep = np.zeros(rp.size, dtype=bool)
    sub_keep[order] = rank < cap
    keep[np.flatnonzero(big[row_pos])] = False
    keep[idx] = sub_keep
    return keep


def capped_neighbours(ptr: np.ndarray, nbr: np.ndarray, rows: np.ndarray, cap: int, rng: np.random.Generator):
    """Neighbour lists of ``rows``, each reduced to a uniform random subset of ``cap`` entries when longer.

    Returns (position of the row in ``rows``, neighbour, full degree per row). Rows with ≤ 4·cap neighbours
    use :func:`cap_rows`; longer rows draw 2·cap positions with replacement and keep the first ``cap``
    distinct ones in draw order (sequential sampling without replacement = a uniform subset) without touching
    the rest of the row; a long row with fewer than ``cap`` distinct draws (practically never) falls back to
    :func:`cap_rows`. Exact in distribution either way.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = ptr[rows]
    deg = ptr[rows + 1] - starts
    heavy = deg > 4 * cap
    h = np.flatnonzero(heavy)
    parts_rp, parts_nb = [], []
    if h.size:
        m = 2 * cap
        pos = (rng.random((h.size, m)) * deg[h][:, None]).astype(np.int64)
        order = np.argsort(pos, axis=1, kind="stable")
        spos = np.take_along_axis(pos, order, axis=1)
        first_sorted = np.ones_like(spos, dtype=bool)
        first_sorted[:, 1:] = spos[:, 1:] != spos[:, :-1]
        first = np.zeros_like(first_sorted)
        np.put_along_axis(first, order, first_sorted, axis=1)
        sel = first & (np.cumsum(first, axis=1) <= cap)
        ok = sel.sum(axis=1) == cap
        sel &= ok[:, None]
        r_i, c_i = np.nonzero(sel)
        parts_rp.append(h[r_i])
        parts_nb.append(nbr[starts[h][r_i] + pos[r_i, c_i]])
        heavy[h[~ok]] = False  # fall back to the exact sort path for those rows
    light = np.flatnonzero(~heavy)
    if light.size:
        rp, nb, dl = _gather(ptr, nbr, rows[light])
        keep = cap_rows(rp, dl, cap, rng)
        parts_rp.append(light[rp[keep]])
        parts_nb.append(nb[keep])
    if not parts_rp:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), deg
    return np.concatenate(parts_rp), np.concatenate(parts_nb), deg


def sample_without_replacement(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn without replacement with probability ∝ ``weights`` (> 0), in draw order."""
    m = weights.size
    if m == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    keys = rng.exponential(size=m) / weights
    if n >= m:
        return np.argsort(keys, kind="stable").astype(np.int64)
    part = np.argpartition(keys, n - 1)[:n]
    return part[np.argsort(keys[part], kind="stable")].astype(np.int64)


def _update_budget(budget: np.ndarray, new_nodes: np.ndarray, ptr: np.ndarray, nbr: np.ndarray,
                   src_sampled: np.ndarray, cap: int, rng: np.random.Generator) -> None:
    """Add 1/min(deg, cap) to the budget of ≤ cap random not-yet-sampled in-neighbours of each new node."""
    if new_nodes.size == 0:
        return
    row_pos, nb, deg = capped_neighbours(ptr, nbr, new_nodes, cap, rng)
    if nb.size == 0:
        return
    w = 1.0 / np.maximum(np.minimum(deg, cap), 1).astype(np.float64)
    sel = ~src_sampled[nb]
    budget += np.bincount(nb[sel], weights=w[row_pos[sel]], minlength=budget.size)


def _draw(budget: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    cand = np.flatnonzero(budget > 0)
    if cand.size == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    pick = cand[sample_without_replacement(budget[cand] ** 2, n, rng)]
    budget[pick] = 0.0
    return pick


def _edges(dst_nodes: np.ndarray, ptr: np.ndarray, nbr: np.ndarray, src_local: np.ndarray, cap: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Local (src, dst) edges: ≤ cap random in-neighbours per destination, kept if the source was sampled."""
    row_pos, nb, _ = capped_neighbours(ptr, nbr, dst_nodes, cap, rng)
    src = src_local[nb]
    keep = src >= 0
    return src[keep].astype(np.int64), row_pos[keep].astype(np.int64)


def hgt_sample(graph: BipartiteGraph, seeds: np.ndarray, rng: np.random.Generator,
               num_samples: tuple[int, ...] = (2048, 1024), cap: int = MAX_NEIGHBORS) -> Subgraph:
    """HGT subgraph around the seed cells (see the module docstring; docs/methods.md §4.3 steps 1–7)."""
    seeds = np.asarray(seeds, dtype=np.int64)
    n_c, n_g = graph.n_cells, graph.n_genes
    cell_sampled = np.zeros(n_c, dtype=bool)
    gene_sampled = np.zeros(n_g, dtype=bool)
    cell_sampled[seeds] = True
    budget_c = np.zeros(n_c, dtype=np.float64)
    budget_g = np.zeros(n_g, dtype=np.float64)
    cells = [seeds]
    genes: list[np.ndarray] = []
    # budget from the seeds: relation gene→cell has destination cell, sources = genes of each seed
    _update_budget(budget_g, seeds, graph.cell_ptr, graph.cell_nbr, gene_sampled, cap, rng)
    for hop, n in enumerate(num_samples):
        new_c = _draw(budget_c, int(n), rng)
        new_g = _draw(budget_g, int(n), rng)
        cell_sampled[new_c] = True
        gene_sampled[new_g] = True
        cells.append(new_c)
        genes.append(new_g)
        if hop < len(num_samples) - 1:
            _update_budget(budget_g, new_c, graph.cell_ptr, graph.cell_nbr, gene_sampled, cap, rng)
            _update_budget(budget_c, new_g, graph.gene_ptr, graph.gene_nbr, cell_sampled, cap, rng)
    cells_a = np.concatenate(cells)
    genes_a = np.concatenate(genes) if genes else np.zeros(0, dtype=np.int64)
    cell_local = np.full(n_c, -1, dtype=np.int64)
    cell_local[cells_a] = np.arange(cells_a.size)
    gene_local = np.full(n_g, -1, dtype=np.int64)
    gene_local[genes_a] = np.arange(genes_a.size)
    gc_src, gc_dst = _edges(cells_a, graph.cell_ptr, graph.cell_nbr, gene_local, cap, rng)
    cg_src, cg_dst = _edges(genes_a, graph.gene_ptr, graph.gene_nbr, cell_local, cap, rng)
    return Subgraph(cells_a, genes_a, int(seeds.size), gc_src, gc_dst, cg_src, cg_dst)


def mean_operator(src: np.ndarray, dst: np.ndarray, n_dst: int, n_src: int, device) -> torch.Tensor:
    """Sparse (n_dst × n_src) mean-aggregation operator: value 1/in-degree(dst) per edge."""
    indeg = np.bincount(dst, minlength=n_dst).astype(np.float32)
    val = 1.0 / indeg[dst] if dst.size else np.zeros(0, np.float32)
    idx = torch.from_numpy(np.vstack([dst, src]).astype(np.int64))
    m = torch.sparse_coo_tensor(idx, torch.from_numpy(val.astype(np.float32)), (n_dst, n_src), check_invariants=False)
    return m.coalesce().to(device)


def _agg(m: torch.Tensor, x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """``lin(mean_agg(x))`` computed in the cheaper order (exact: the mean is linear)."""
    if lin.out_features < lin.in_features:
        return torch.sparse.mm(m, x @ lin.weight.T) + lin.bias
    return lin(torch.sparse.mm(m, x))


class BipartiteSAGEEncoder(nn.Module):
    """Two-layer heterogeneous GraphSAGE (mean) encoder with BatchNorm and no activation (scGPCL §4.4)."""

    def __init__(self, n_genes: int, gene_dim: int = 64, hidden: int = 256, out: int = 64):
        super().__init__()
        # layer 1: cell ← genes (W1, bias) + root (U1, no bias); gene ← cells (V1, bias) + root (R1, no bias)
        self.c1_nbr = nn.Linear(gene_dim, hidden)
        self.c1_root = nn.Linear(n_genes, hidden, bias=False)
        self.g1_nbr = nn.Linear(n_genes, hidden)
        self.g1_root = nn.Linear(gene_dim, hidden, bias=False)
        self.bn_c1 = nn.BatchNorm1d(hidden)
        self.bn_g1 = nn.BatchNorm1d(hidden)
        # layer 2 (cells only; the gene update of layer 2 is never used)
        self.c2_nbr = nn.Linear(hidden, out)
        self.c2_root = nn.Linear(hidden, out, bias=False)
        self.bn_c2 = nn.BatchNorm1d(out)

    def forward(self, x_c: torch.Tensor, x_g: torch.Tensor, m_gc: torch.Tensor, m_cg: torch.Tensor) -> torch.Tensor:
        """``x_c`` [n_c, G], ``x_g`` [n_g, gene_dim], ``m_gc`` (n_c × n_g), ``m_cg`` (n_g × n_c) → [n_c, out]."""
        h_c = self.bn_c1(_agg(m_gc, x_g, self.c1_nbr) + self.c1_root(x_c))
        h_g = self.bn_g1(_agg(m_cg, x_c, self.g1_nbr) + self.g1_root(x_g))
        return self.bn_c2(_agg(m_gc, h_g, self.c2_nbr) + self.c2_root(h_c))
