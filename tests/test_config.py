from __future__ import annotations

from dataclasses import dataclass

import pytest

from scclust_core.config import MethodConfig, param


@dataclass
class ToyConfig(MethodConfig):
    n_epochs: int = param(30, min=1, max=1000, help="epochs")
    lr: float = param(0.4, min=1e-6, max=10.0, help="learning rate")
    loss: str = param("nb", choices=("nb", "zinb"), help="likelihood")
    layers: list = param([256, 64], help="hidden sizes", advanced=True)
    n_hvg: int | str = param(500, help="HVGs or 'auto'")
    use_fix: bool = param(False, help="fix the quirk", advanced=True)

    PRESETS = {"paper": {}, "cpu": {"n_epochs": 5}}


def test_defaults_and_specs():
    cfg = ToyConfig()
    assert cfg.n_epochs == 30 and cfg.layers == [256, 64]
    specs = {s.name: s for s in ToyConfig.field_specs()}
    assert specs["n_epochs"].kind == "int" and specs["n_epochs"].min == 1
    assert specs["lr"].kind == "float"
    assert specs["loss"].kind == "choice" and specs["loss"].choices == ("nb", "zinb")
    assert specs["layers"].kind == "int_list"
    assert specs["n_clusters"].optional
    assert specs["use_fix"].kind == "bool"
    # basic fields come before advanced ones
    adv = [s.advanced for s in ToyConfig.field_specs()]
    assert adv == sorted(adv)


def test_mutable_defaults_are_not_shared():
    a, b = ToyConfig(), ToyConfig()
    a.layers.append(1)
    assert b.layers == [256, 64]


@pytest.mark.parametrize("bad, match", [
    ({"n_epochs": 0}, "below its minimum"),
    ({"lr": 100.0}, "above its maximum"),
    ({"loss": "poisson"}, "not one of"),
    ({"n_epochs": "ten"}, "integer"),
    ({"nonsense": 1}, "Unknown parameter"),
    ({"use_fix": "yes"}, "true or false"),
])
def test_validation_errors_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        ToyConfig.from_dict(bad)


def test_presets_and_overrides():
    cfg = ToyConfig.from_preset("cpu", lr=0.1)
    assert cfg.n_epochs == 5 and cfg.lr == 0.1
    with pytest.raises(ValueError, match="Unknown preset"):
        ToyConfig.from_preset("gpu")
    assert ToyConfig.default_preset() in ("paper", "cpu")


def test_round_trip_and_strings():
    cfg = ToyConfig.from_preset("paper")
    assert ToyConfig.from_dict(cfg.to_dict()) == cfg
    cfg2 = cfg.set_from_strings({"n_epochs": "7", "use_fix": "true", "layers": "128,32", "n_hvg": "auto",
                                 "n_clusters": "none", "lr": "1e-3"})
    assert (cfg2.n_epochs, cfg2.use_fix, cfg2.layers, cfg2.n_hvg, cfg2.n_clusters, cfg2.lr) == (
        7, True, [128, 32], "auto", None, 1e-3)
    assert cfg.set_from_strings({"n_hvg": "1000"}).n_hvg == 1000
    with pytest.raises(ValueError, match="expects"):
        cfg.set_from_strings({"lr": "fast"})


def test_non_finite_floats_are_refused_by_validate():
    """NaN passes every range comparison, so validate() must refuse it (and inf) by name — for callers that skip
    the CLI's own check too."""
    import dataclasses
    import math

    import pytest

    from scclust_core.methods import get_method

    cfg = get_method("cicl").Config.from_preset("cpu")
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="lr_encoder must be a finite number"):
            dataclasses.replace(cfg, lr_encoder=bad).validate()
