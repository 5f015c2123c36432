"""Group sparsity as a find phase: a trained model in, a zero pattern at a share of channels or
a cost (MACs, parameters) out, with no lambda to tune (:func:`find_sparse`, used by
:func:`tfmot_mtl.recipes.find_channels` and :func:`tfmot_mtl.compress`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras

# Share of the find phase over which the target ramps up (the rest trains the locked pattern).
RAMP = 0.75
# The pilot criterion of the adaptive group lasso (:mod:`tfmot_mtl.sparsity.pilot`) and its power.
PILOT = "taylor"
PILOT_EXPONENT = 1.0


def find_sparse(dense: keras.Model, data, target: float, epochs: int, lr: float, groups: Any,
                options: Mapping[str, Any], verbose: int = 0, *, callbacks: Sequence = (),
                eager: bool = False, target_macs: float | None = None, target_params: float | None = None,
                min_channels: int = 2, min_fraction: float | None = None) -> tuple[keras.Model, Any, dict]:
    """Group lasso + proximal step on a copy of ``dense`` (see ``find_channels``)."""
    from tfmot_mtl.recipes.experiment import steps_per_epoch
    from tfmot_mtl.profile import MaskedCost
    from tfmot_mtl.recipes.train import cosine_adam
    from tfmot_mtl.selection import default_min_fraction, layer_floor
    from tfmot_mtl.sparsity import (ProximalGroupLasso, apply_group_sparsity, pilot_weights,
                                    remove_group_sparsity, sparsity_report)
    from tfmot_mtl.tasks import compile_args

    opts = dict(options)
    min_channels = opts.pop("min_channels", min_channels)
    min_fraction = default_min_fraction(opts.pop("min_fraction", min_fraction),
                                        target_macs is not None or target_params is not None)
    steps = steps_per_epoch(data.train)
    model = apply_group_sparsity(dense, l1=opts.pop("l1_loss", 1e-5), groups=groups)
    cost = {"target_macs": target_macs, "target_params": target_params}
    model.compile(cosine_adam(lr, epochs, steps), jit_compile=False, run_eagerly=eager,
                  **compile_args(data.tasks))
    pilot, pilot_exponent = opts.pop("pilot", PILOT), opts.pop("pilot_exponent", PILOT_EXPONENT)
    if pilot is not None and "channel_weights" not in opts:  # on the task losses just compiled
        opts["channel_weights"] = pilot_weights(model, data.train, _criterion(pilot), exponent=pilot_exponent)
    prox = ProximalGroupLasso(l1=opts.pop("l1", 0.3), groups=groups,
                              target=target if target_macs is None and target_params is None else None,
                              adapt_rate=opts.pop("adapt_rate", 0.2), gain=opts.pop("gain", "auto"),
                              min_channels=min_channels,
                              min_fraction=min_fraction, ramp_steps=max(1, int(RAMP * max(1, epochs) * steps)),
                              relative=opts.pop("relative", True), **cost, **opts)
    history = model.fit(data.train, epochs=max(1, epochs), callbacks=[prox, *callbacks], verbose=verbose)
    remove_group_sparsity(model)  # its zeros are found: what is stripped from it loads in plain Keras
    graph = prox.graph
    masks = prox.masks
    report = sparsity_report(model, groups=groups)
    params, macs = (cost_model := MaskedCost(graph))(masks)
    min_fraction = prox.min_fraction  # with a cost target, the floor it set
    floor = {g.id: layer_floor(g.size, min_channels, min_fraction) for g in prox.groups}
    info = {"method": "sparsity", "sparsity": report["channel_sparsity"], "report": report,
            "per_epoch": [float(v) for v in history.history.get(prox.log_key, [])],
            "aimed": float(prox.target or 0.0), "trimmed": int(prox.trimmed), "min_fraction": min_fraction,
            "at_floor": [g.id for g in prox.groups if g.size > floor[g.id] and int(masks[g.id].sum()) <= floor[g.id]],
            "reached": {"params": params, "macs": macs, "params_share": params / max(1, cost_model.dense_params),
                        "macs_share": macs / max(1, cost_model.dense_macs)}}
    return model, masks, info


def _criterion(name: Any):
    """A criterion object from ``options["pilot"]``: an importance instance or a criterion name."""
    if not isinstance(name, str):
        return name
    from tfmot_mtl.pruning.run import make_criterion

    return make_criterion(name)
