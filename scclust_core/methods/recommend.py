"""``recommend``: one label-free clustering from a consensus of many cheap candidate partitions.

Candidates: the data are normalised and log-transformed once and the genes ranked once by dispersion (scanpy
``seurat`` flavour), so the HVG sets of every size are nested; each HVG size is scaled and projected by PCA once,
and each (HVG size, number of PCs) view gives Leiden partitions at several resolutions (on one exact kNN graph)
and K-means partitions (K given: ``n_seeds`` seeds at K; K estimated: one run at every K Leiden found). Deep
methods named in ``deep_methods`` add one view each (their learned embedding, clustered the same way); each is
trained through the public ``fit`` API on the raw counts of the same cells, only when its estimated time fits what
is left of ``budget_s``. On the shared data they did not improve the consensus, so the default is classic-only
(the README has the figures). Each candidate is reported as one "epoch", so the live view shows which candidate
runs, how many are left, the ETA, and honours cancel (the consensus is then formed from the candidates done). The
consensus rule, K estimation and confidence are in :mod:`scclust_core.consensus`. Reference labels are never used.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
from anndata import AnnData

from .. import consensus as cons
from ..config import MethodConfig, param
from ..estimate import CostModel, measured_runs
from ..graph import knn_graph, leiden_partition
from ._base import ClusteringMethod, FitContext, Prepared
from ._types import Callback, MethodCard
from ._params import knn_neighbours
from ._registry import register_method

logger = logging.getLogger(__name__)

__all__ = ["RecommendConfig", "Recommend", "RESOLUTIONS", "candidate_names", "summary_dict"]

#: Leiden resolutions of the candidates (fixed once, not per data set)
RESOLUTIONS = (0.3, 0.5, 0.8, 1.2, 2.0)


@dataclass
class RecommendConfig(MethodConfig):
    hvg_sizes: list[int] = param([1000, 2000, 3000], help="HVG set sizes of the candidate views (nested; "
                                 "capped at the number of genes).")
    pcs: list[int] = param([20, 50], help="Numbers of principal components of the candidate views.")
    n_seeds: int = param(5, min=1, max=50, help="K-means seeds per view when K is given.")
    n_neighbors: int = knn_neighbours(15, "Neighbours of the kNN graph for Leiden.", max=200)
    k_max: int = param(30, min=2, max=500, help="Largest K considered when K is estimated.")
    max_cells: int = param(3000, min=100, max=20000, advanced=True,
                           help="Cells sampled for the co-association dendrogram; the rest join by mean "
                                "co-association (memory grows with its square, not with the data).")
    budget_s: float = param(150.0, min=0.0, max=36000.0,
                            help="Time budget for building candidates (seconds, counted from the first candidate, "
                                 "after normalisation and the PCA views); candidates not started by then are "
                                 "skipped and the run says so (at least 2 always run).")
    deep_methods: list[str] = param([], help="Deep methods whose trained embedding becomes one more "
                                    "candidate view (Leiden and K-means on it, as on a PCA view), each only when its "
                                    "estimated time fits what is left of budget_s; [] (the default, see the README) = classic candidates only.")
    deep_seeds: int = param(1, min=0, max=10, advanced=True, help="Trainings (seeds) per deep method.")
    deep_preset: str = param("cpu", choices=("cpu", "tiny"), advanced=True,
                             help="Preset of the deep methods' trainings (tiny: smoke tests only).")
    rule: str = param("select", choices=cons.RULES, advanced=True,
                      help="Consensus rule. select was chosen once on the shared benchmark data (see the README); "
                           "the others are kept for comparison.")

    PRESETS = {"default": {}, "with_deep": {"deep_methods": ["contrastive_sc"]},
               "tiny": {"hvg_sizes": [40, 60], "pcs": [5, 10], "n_seeds": 2, "deep_methods": ["contrastive_sc"],
                        "deep_preset": "tiny"}}
    PRESET_NOTES = {"default": "3 HVG sizes × 2 PC counts; Leiden at 5 resolutions and K-means (5 seeds) per view.",
                    "with_deep": "The default plus one contrastive-sc (cpu preset) embedding as a 7th view when it "
                                 "fits the budget (no better on the shared data, see the README).",
                    "tiny": "Smoke test only: 2 small HVG sets × 2 PC counts, 2 K-means seeds, a tiny contrastive-sc "
                            "(seconds on ~150 cells)."}

    def validate(self) -> None:
        super().validate()
        for name, lo in (("hvg_sizes", 10), ("pcs", 2)):
            vals = getattr(self, name)
            if not vals or any(not isinstance(v, (int, np.integer)) or v < lo for v in vals):
                raise ValueError(f"{name} must be a non-empty list of integers ≥ {lo}, got {vals!r}")
        from ._registry import get_method

        for name in self.deep_methods:
            m = get_method(name)  # raises for an unknown name
            if not (m.deep and m.trains_network):  # get_method raises for unknown names
                raise ValueError(f"deep_methods: {name!r} is not a deep method")


def _lognorm(adata: AnnData) -> AnnData:
    """Filtered, median-normalised, log1p counts with ``var['rank']`` = dispersion rank (0 = most variable).

    Without raw counts a log-normalised X is taken as it is (with the classic methods' warning) and no deep view
    can train (they need the counts): ``layers['counts']`` is then absent."""
    import scanpy as sc

    from ..preprocess import _filter_zero, counts_adata, lognormalised_input

    try:
        ad = _filter_zero(counts_adata(adata))
        ad.layers["counts"] = ad.X.copy()  # the deep candidates train on counts
        lognorm = False
    except ValueError:  # no counts anywhere: a log-normalised X is accepted, anything else refused
        x, msg = lognormalised_input(adata, "recommend")
        warnings.warn(msg, UserWarning, stacklevel=2)
        ad = AnnData(x, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
        ad.obs["cell_index"] = np.arange(adata.n_obs, dtype=np.int64)
        ad.uns["input_warnings"] = [msg]
        lognorm = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not lognorm:
            sc.pp.normalize_total(ad)
            sc.pp.log1p(ad)
        sc.pp.highly_variable_genes(ad, flavor="seurat", n_top_genes=max(1, ad.n_vars - 1))
    disp = np.nan_to_num(ad.var["dispersions_norm"].to_numpy(np.float64), nan=-np.inf)
    rank = np.empty(ad.n_vars, dtype=np.int64)
    rank[np.argsort(-disp, kind="stable")] = np.arange(ad.n_vars)
    ad.var = ad.var[[]].assign(rank=rank)
    return ad


def _views(ad: AnnData, config: RecommendConfig) -> dict[int, np.ndarray]:
    """PCA (``max(pcs)`` components) of each scaled HVG set, keyed by HVG size."""
    from sklearn.decomposition import PCA

    from ..preprocess import _scale_genes

    rank = ad.var["rank"].to_numpy()
    out = {}
    for size in sorted({min(int(s), ad.n_vars) for s in config.hvg_sizes}):
        x = _scale_genes(ad.X[:, np.flatnonzero(rank < size)], clip=10.0)
        n_comp = int(min(max(config.pcs), x.shape[0] - 1, x.shape[1] - 1))
        if n_comp < 2:
            raise ValueError(f"Too few cells or genes for PCA ({x.shape[0]} × {x.shape[1]})")
        # arpack as measured on the shared data (≤ 8.6k cells); randomized beyond 20k cells, where arpack's
        # iterations took the whole time budget at 50k (only 2 candidates ran)
        solver = "full" if n_comp >= min(x.shape) - 1 else ("randomized" if x.shape[0] > 20_000 else "arpack")
        out[size] = PCA(n_comp, svd_solver=solver, random_state=config.seed).fit_transform(x).astype(np.float32)
    return out


def _view_plan(view: int | str, npc: int, config: RecommendConfig) -> list[tuple]:
    """The candidates of one view: Leiden at every resolution, interleaved with K-means (``n_seeds`` seeds at the
    given K, or one run at each K a Leiden run found)."""
    leiden = [("leiden", view, npc, r, config.seed) for r in RESOLUTIONS]
    if config.n_clusters is not None:
        km = [("kmeans", view, npc, config.n_clusters, config.seed + s) for s in range(config.n_seeds)]
    else:
        km = [("kmeans_from_leiden", view, npc, r, config.seed) for r in RESOLUTIONS]
    return _interleave([leiden, km])


def deep_views(config: RecommendConfig) -> list[str]:
    """Keys of the deep views, ``"<method> seed <s>"``, in run order."""
    return [f"{m} seed {config.seed + s}" for m in config.deep_methods for s in range(config.deep_seeds)]


def _candidate_plan(dims: dict[int, int], config: RecommendConfig) -> list[tuple]:
    """``(kind, view, n_pcs, param, seed)`` per candidate, from ``dims`` = {HVG size: PCs available}; the deep
    views (``n_pcs`` 0 = the whole embedding) come last, each trained when its first candidate is due."""
    per_view = [_view_plan(size, npc, config) for size, n_comp in dims.items()
                for npc in sorted({min(int(p), n_comp) for p in config.pcs})]
    # round-robin over the PCA views (each view keeps its own order, so a Leiden run precedes the K-means that
    # reuses its K): when the time budget cuts the plan short, the candidates done still span every view and both
    # kinds. The full plan gives the same consensus in any order (fixed seeds per candidate).
    return _interleave(per_view) + [step for key in deep_views(config) for step in _view_plan(key, 0, config)]


def _interleave(lists: list[list]) -> list:
    """Round-robin merge: a[0], b[0], …, a[1], b[1], … (each list keeps its order)."""
    out, i = [], 0
    while any(i < len(x) for x in lists):
        out += [x[i] for x in lists if i < len(x)]
        i += 1
    return out


def candidate_names(config: RecommendConfig, n_cells: int, n_genes: int) -> list[str]:
    """The planned candidates in run order (for the live view: which one runs, how many are left)."""
    sizes = sorted({min(int(s), n_genes) for s in config.hvg_sizes})
    dims = {s: int(min(max(config.pcs), n_cells - 1, s - 1)) for s in sizes}
    return [_name(step, {}) for step in _candidate_plan(dims, config)]


def _run_candidate(step: tuple, views: dict, graphs: dict, found_k: dict,
                   config: RecommendConfig) -> np.ndarray | None:
    """One candidate partition (``None`` when a K-means step has no usable K from its Leiden run)."""
    from sklearn.cluster import KMeans

    kind, size, npc, par, seed = step
    z = views[size][:, :npc] if npc else views[size]
    if kind == "leiden":
        if (size, npc) not in graphs:  # one kNN graph per view, kept (≈ 15 edges a cell) as views interleave
            graphs[(size, npc)] = knn_graph(z, config.n_neighbors)
        lab = leiden_partition(graphs[(size, npc)], par, seed)
        found_k[(size, npc, par)] = int(lab.max()) + 1
        return lab
    k = par if kind == "kmeans" else found_k.get((size, npc, par), 0)
    if kind == "kmeans_from_leiden" and not 2 <= k <= min(config.k_max, len(z) - 1):
        return None
    return KMeans(int(k), n_init=1, random_state=int(seed) + (int(par * 10) if kind != "kmeans" else 0)).fit_predict(z)


@register_method("recommend")
class Recommend(ClusteringMethod[RecommendConfig]):
    """Recommend (consensus): one label-free clustering from many classic candidates, with per-cell confidence."""

    card = MethodCard(
        what=('Runs about 60 quick K-means and Leiden clusterings over several gene sets, PC counts, seeds and '
              'resolutions, and combines them into the one partition they agree on most, with a confidence per '
              'cell. No labels are used; leave K empty and it estimates K too.'),
        when=('The place to start: one answer you can trust more than any single classic run, and the cells it is '
              'unsure about are shown on the map.'))
    #: measured on a 2-core CPU, one torch thread (README benchmark tables; peak RSS of one-run processes)
    cost = CostModel(
        measured_runs("default", (4271, 2000, 25.9), (822, 14878, 7.6), (8617, 2000, 54.4), (220, 12694, 2.6),
                                 (1000, 900, 2.4), (2746, 2003, 22.7), (4186, 13488, 32.4)))

    citation = ("Evidence accumulation: Fred & Jain, IEEE TPAMI 2005; SC3: Kiselev et al., Nat. Methods 2017; "
                "HBGF: Fern & Brodley, ICML 2004")
    recipe = "normalize_total, log1p, nested HVG sets (seurat ranking), scale (clip 10), PCA per HVG size"
    fidelity = ("a new method (no paper to match): consensus of classic candidates; a deep embedding joins them "
                "with the with_deep preset")
    can_estimate_k = True
    needs_counts = False  # log-normalised X is accepted with a warning, as by the classic candidates it combines
    kind = "consensus"
    summary_key = "recommend"  # extras, obs[key + '_confidence'] and uns[key]['consensus'] (kept for old runs)
    deep = True  # candidates are reported as epochs: live progress, ETA, cancel, snapshots
    trains_network = False  # no optimizer: nothing can diverge, nothing runs on a GPU

    def planned_epochs(self, config: RecommendConfig) -> int:
        """Candidates planned (an upper bound: HVG sizes or PC counts capped by the data may coincide)."""
        per_view = len(RESOLUTIONS) + (config.n_seeds if config.n_clusters is not None else len(RESOLUTIONS))
        return (len(set(config.hvg_sizes)) * len(set(config.pcs)) + len(deep_views(config))) * per_view

    def prepare(self, adata: AnnData, config: RecommendConfig) -> Prepared:
        ad = _lognorm(adata)
        return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64))

    def train(self, data: Prepared, config: RecommendConfig, ctx: FitContext):
        views = _views(data.adata, config)
        if ctx.integration.active:  # Harmony on every view (the PCs of each HVG set)
            views = {s: ctx.integration.harmony(z, config.seed) for s, z in views.items()}
        plan = _candidate_plan({s: z.shape[1] for s, z in views.items()}, config)
        main = views[min(views, key=lambda s: abs(s - 2000))]  # the 2,000-HVG view (as the classic baselines)
        ctx.begin(len(plan))
        ctx.initial(main, np.zeros(len(main), dtype=np.int64))  # the PCA view before any candidate: one colour
        cands = _Candidates(data.adata, views, config, ctx)
        for step in plan:
            if ctx.stop_requested:  # e.g. cancelled while a deep view trained
                break
            lab = cands.run(step)
            if lab is not None and ctx.emit(len(cands.parts), "candidates", {"disagreement": cands.disagreement()},
                                            embedding=main, labels=lab,
                                            extra_metrics={"n_clusters": float(len(np.unique(lab)))}):
                break
        if not cands.parts:
            raise ValueError("Cancelled before any candidate clustering finished; nothing to combine")
        return main, *self._combine(np.vstack(cands.parts), cands.names, config, cands.notes())

    def cluster_embedding(self, z: np.ndarray, config: RecommendConfig) -> tuple[np.ndarray, dict]:
        """The consensus of Leiden (every resolution) and K-means candidates on one given embedding."""
        z = np.asarray(z, dtype=np.float32)
        views, graphs, found_k = {"parent": z}, {}, {}
        parts, names = [], []
        for step in _view_plan("parent", 0, config):
            lab = _run_candidate(step, views, graphs, found_k, config)
            if lab is not None:
                parts.append(np.unique(lab, return_inverse=True)[1].astype(np.int64))
                names.append(_name(step, found_k))
        return self._combine(np.vstack(parts), names, config, [])

    @staticmethod
    def _combine(p: np.ndarray, names: list[str], config: RecommendConfig, notes: list[str]):
        res = cons.consensus(p, n_clusters=config.n_clusters, k_max=config.k_max, max_cells=config.max_cells,
                             rule=config.rule, seed=config.seed)
        agree = cons.agreement_matrix(p, seed=config.seed)
        extras: dict = {Recommend.summary_key: summary_dict(res, names, agree, p)}
        if notes:
            extras["warnings"] = notes
        return res.labels, extras


class _Forward(Callback):
    """Passes the outer run's cancel to a deep method trained as a candidate view."""

    def __init__(self, ctx: FitContext):
        self.ctx = ctx

    def should_stop(self) -> bool:
        return self.ctx.stop_requested


class _Candidates:
    """The candidate partitions done so far, the budget, and the views (deep ones trained when first due)."""

    def __init__(self, ad: AnnData, views: dict, config: RecommendConfig, ctx: FitContext):
        self.ad, self.views, self.config, self.ctx = ad, dict(views), config, ctx
        self.t0 = time.perf_counter()
        self.parts: list[np.ndarray] = []
        self.names: list[str] = []
        self.graphs: dict = {}
        self.found_k: dict = {}
        self.skipped = 0
        self.deep_notes: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, step: tuple) -> np.ndarray | None:
        """One candidate partition (None when skipped: budget, a deep view that does not fit, no usable K)."""
        view = step[1]
        if self.elapsed() > self.config.budget_s and len(self.parts) >= 2:
            self.skipped += 1
            return None
        if view not in self.views:
            self.views[view] = self._deep_view(view)
        if self.views[view] is None:
            return None
        lab = _run_candidate(step, self.views, self.graphs, self.found_k, self.config)
        if lab is None:
            return None
        self.parts.append(np.unique(lab, return_inverse=True)[1].astype(np.int64))
        self.names.append(_name(step, self.found_k))
        return lab

    def _deep_view(self, key: str) -> np.ndarray | None:
        """Train ``key``'s deep method on the counts of the kept cells; None (with a note) when it does not fit
        the budget, is cancelled, or drops cells."""
        from ..estimate import estimate
        from ._registry import get_method

        name, seed = key.split(" seed ")
        if "counts" not in self.ad.layers:
            self.deep_notes.append(f"{key}: not trained (the data holds no raw counts); its candidates were skipped.")
            return None
        counts = self.ad.layers["counts"]
        est = estimate(get_method(name), self.config.deep_preset, counts.shape[0], counts.shape[1]).seconds
        left = self.config.budget_s - self.elapsed()
        if est is not None and est > left:
            self.deep_notes.append(f"{key}: not trained (estimated {est:.0f} s, {max(left, 0):.0f} s of the budget "
                                   "left); its candidates were skipped.")
            return None
        m = get_method(name)
        cfg = m.Config.from_preset(self.config.deep_preset, n_clusters=self._k_for_deep(), seed=int(seed),
                                   device=self.config.device)
        res = m.fit(AnnData(counts.copy()), cfg, callback=_Forward(self.ctx))
        if res.status != "completed" or len(res.cell_index) != counts.shape[0]:
            self.deep_notes.append(f"{key}: {res.status}, kept {len(res.cell_index)} of {counts.shape[0]} cells; "
                                   "its candidates were skipped.")
            return None
        return np.asarray(res.embedding, dtype=np.float32)

    def _k_for_deep(self) -> int:
        """K for a deep method's training: the given K, else the median K of the Leiden candidates (label-free)."""
        if self.config.n_clusters is not None:
            return int(self.config.n_clusters)
        ks = [k for k in self.found_k.values() if 2 <= k <= self.config.k_max]
        return int(np.median(ks)) if ks else 8

    def disagreement(self) -> float:
        """1 − mean ARI of the newest candidate with the earlier ones (0 for the first): the live curve of how
        much the candidates disagree, label-free (a flat curve near 0 means the consensus is an easy one)."""
        if len(self.parts) < 2:
            return 0.0
        return float(1.0 - np.mean([cons.pair_ari(self.parts[-1], q) for q in self.parts[:-1]]))

    def notes(self) -> list[str]:
        out = list(self.deep_notes)
        if self.skipped:
            out.append(f"The time budget ({self.config.budget_s:.0f} s) ran out: {self.skipped} candidate "
                       "clusterings were skipped; raise budget_s for a fuller consensus.")
        return out


def _name(step: tuple, found_k: dict) -> str:
    kind, size, npc, par, seed = step
    where = f"{size} embedding" if isinstance(size, str) else f"{size} HVG · {npc} PCs"
    if kind == "leiden":
        return f"leiden r={par} · {where}"
    if kind == "kmeans":
        return f"kmeans K={par} seed {seed} · {where}"
    k = found_k.get((size, npc, par))
    return f"kmeans K={k if k is not None else f'(as leiden r={par})'} · {where}"


def _proposal_name(key: str, names: list[str]) -> str:
    """``"candidate 7"`` (a proposal of rule ``select``) → that candidate's name; consensus proposals unchanged."""
    if key.startswith("candidate ") and key[10:].isdigit() and int(key[10:]) < len(names):
        return f"candidate: {names[int(key[10:])]}"
    return key


def summary_dict(res: cons.ConsensusResult, names: list[str], agree: np.ndarray, p: np.ndarray) -> dict:
    """JSON/h5ad-friendly summary: confidence, K evidence, agreement matrix, the candidates that agreed most."""
    codes = np.unique(res.labels, return_inverse=True)[1]
    with_consensus = [cons.pair_ari(codes, np.unique(row, return_inverse=True)[1]) for row in p]
    mean_agree = ((agree.sum(1) - 1) / max(1, len(names) - 1)).tolist()
    top = np.argsort(-np.asarray(mean_agree))[:5]
    return {
        "rule": res.rule, "chosen": _proposal_name(res.chosen, names),
        "selection": {_proposal_name(k, names): round(v, 4) for k, v in res.selection.items()},
        "n_clusters": res.n_clusters, "k_estimated": bool(res.k_estimated),
        "k_evidence": {k: [float(v) for v in vals] for k, vals in res.evidence.items()},
        "candidates": list(names), "agreement_ari": np.round(agree, 4).tolist(),
        "ari_with_consensus": [round(v, 4) for v in with_consensus],
        "mean_agreement": [round(float(v), 4) for v in mean_agree],
        "most_agreeing": [names[i] for i in top],
        "confidence": np.round(res.confidence.astype(float), 4).tolist(),
        "mean_confidence": float(res.confidence.mean()),
    }


def candidate_partitions(adata: AnnData, config: RecommendConfig) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Every classic candidate partition of a run (no time budget, no deep view, no consensus), its name, and the
    input rows of the cells kept: what the leave-one-dataset-out protocol (:mod:`scclust_core.lodo`) combines."""
    ad = _lognorm(adata)
    views = _views(ad, config)
    plan = [s for s in _candidate_plan({s: z.shape[1] for s, z in views.items()}, config) if not isinstance(s[1], str)]
    graphs: dict = {}
    found_k: dict = {}
    parts, names = [], []
    for step in plan:
        lab = _run_candidate(step, views, graphs, found_k, config)
        if lab is not None:
            parts.append(np.unique(lab, return_inverse=True)[1].astype(np.int64))
            names.append(_name(step, found_k))
    return np.vstack(parts), names, ad.obs["cell_index"].to_numpy(np.int64)
