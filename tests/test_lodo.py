"""The leave-one-dataset-out protocol: an option is always chosen on the other files, scored on the one left out."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import synthetic_counts
from scclust_core.lodo import leave_one_out, main
from scclust_core.methods import get_method
from scclust_core.methods.recommend import candidate_partitions


def test_the_held_out_choice_never_sees_the_held_out_file() -> None:
    # option "a" wins on files 1 and 2, "b" only on file 3 (by a lot): in sample "b" wins the mean, but held out,
    # file 3 is scored with the choice made on files 1-2 ("a"), and files 1-2 with the one made on the others
    rows = []
    for f, (a, b) in {"f1": (0.8, 0.5), "f2": (0.8, 0.5), "f3": (0.1, 0.95)}.items():
        rows += [{"file": f, "seed": 0, "mode": "K given", "subset": "all", "rule": r, "ari": v}
                 for r, v in (("a", a), ("b", b))]
    held, ins = leave_one_out(pd.DataFrame(rows))
    got = dict(zip(held["file"], held["chosen"]))
    assert got == {"f1": "all / b", "f2": "all / b", "f3": "all / a"}
    assert np.isclose(held["ari"].mean(), (0.5 + 0.5 + 0.1) / 3)
    assert set(ins["chosen"]) == {"all / b"} and np.isclose(ins["ari"].mean(), (0.5 + 0.5 + 0.95) / 3)


def test_candidate_partitions_cover_every_kept_cell_and_name_each_candidate() -> None:
    ad = synthetic_counts(150, 60, 3, seed=0)
    cfg = get_method("recommend").default_config(None, n_clusters=3, hvg_sizes=[40], pcs=[5], n_seeds=2)
    parts, names, kept = candidate_partitions(ad, cfg)
    assert parts.shape == (len(names), len(kept)) and len(names) == 5 + 2
    assert sum(n.startswith("leiden") for n in names) == 5


def test_the_cli_refuses_a_single_file(tmp_path, capsys) -> None:
    synthetic_counts(60, 30, 2).write_h5ad(tmp_path / "one.h5ad")
    assert main([str(tmp_path), "--seeds", "1"]) == 2
    assert "at least two" in capsys.readouterr().err
