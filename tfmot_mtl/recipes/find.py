"""The find phase of a recipe: the channels to remove, found by group sparsity or iterative pruning
on a copy of the trained dense model, to a share of channels or a cost in MACs / parameters."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras

from tfmot_mtl.recipes import experiment as ex
from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
from tfmot_mtl.recipes.train import METHODS, runs_eagerly
from tfmot_mtl.selection import MIN_CHANNELS


def find_channels(dense: keras.Model, data: ex.Data, method: str = "sparsity", target: float = 0.7,
                  epochs: int = 4, lr: float = 1e-3, groups: Any = "all",
                  options: Mapping[str, Any] | None = None, verbose: int = 0, *,
                  target_macs: float | None = None, target_params: float | None = None,
                  min_channels: int = MIN_CHANNELS, min_fraction: float | None = None,
                  callbacks: Sequence = ()):
    """Finds the channels to remove, starting from a copy of the trained ``dense`` model.

    ``target`` is the share of the selected channels to remove; ``target_macs`` /
    ``target_params`` (a fraction of the dense model's, or an absolute count above 1) aim
    at a cost instead, counted on the model as it will be stripped.

    ``method="sparsity"`` (Upadhyay et al. 2024): group lasso on the selected groups and the
    proximal step; lambda's gain follows a target that ramps up linearly over the first
    three quarters of the ``epochs`` (no cliff), then the zero pattern is locked. Thresholds are
    relative to each layer's mean channel norm (``relative``). With a cost target the ramp aims
    at 85% of the channels a ranking by norm per unit of cost says the cost needs, and a trim
    by that ranking at the end removes the rest (``info["trimmed"]`` channels), so the cost
    lands. The gain starts where the weakest channels begin to die (``gain="auto"``) and the
    ramp caps the dead share, so no lambda needs tuning. Each channel's threshold is divided by
    its pilot weight (:func:`tfmot_mtl.sparsity.pilot_weights`: its Taylor importance on 8 training
    batches of ``dense`` over the mean of all channels'), an adaptive group lasso that lets the
    loss, not the norms alone, decide which layers thin. ``options`` may set ``l1`` (0.3),
    ``l1_loss`` (1e-5), ``adapt_rate`` (0.2), ``gain``, ``mode``, ``relative`` (True),
    ``cost_exponent`` (1), ``pilot`` (``"taylor"``, a criterion name or object, or None for no
    pilot), ``pilot_exponent`` (1), ``channel_weights`` (your own pilot weights).

    ``method="prune"`` (Garg et al. 2023): iterative pruning with ``options["criterion"]``
    ("taylor" by default) in equal steps spread over ``epochs``, fine-tuning in between;
    ``options`` may set ``events`` (7), ``score_batches``, ``cost_exponent`` (1), ``round_to``.

    Both end with the BatchNorm statistics re-estimated on ``data.train``. ``callbacks`` go
    to the training (e.g. a task monitor). Returns ``(model, masks, info)``: the copy with
    the removed channels at zero, their :class:`ChannelMasks` and a dict with the method's
    numbers (sparsity, events, reached cost, groups cut to their floor, ...).
    """
    from tfmot_mtl.masks import clone_with_weights

    opts = dict(options or {})
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    cost = {"target_macs": target_macs, "target_params": target_params}
    floor = {"min_channels": min_channels, "min_fraction": min_fraction}  # None: each method's default_min_fraction
    if method == "sparsity":
        from tfmot_mtl.sparsity._find import find_sparse

        model, masks, info = find_sparse(dense, data, target, epochs, lr, groups, opts, verbose,
                                         callbacks=callbacks, eager=runs_eagerly(data), **cost, **floor)
    else:
        from tfmot_mtl.pruning.run import prune_model

        steps = ex.steps_per_epoch(data.train)
        criterion = opts.pop("criterion", "taylor")
        total = max(1, epochs) * steps
        events = max(1, min(int(opts.pop("events", 7)), total))  # at most one event per training step
        frequency = max(1, total // (events + 1))
        for key in ("min_channels", "min_fraction"):
            floor[key] = opts.pop(key, floor[key])
        nominal = target if target_macs is None and target_params is None else 0.5
        model = clone_with_weights(dense)
        model, masks, history = prune_model(model, data, criterion, target=nominal, frequency=frequency,
                                            step=nominal / events,
                                            fine_tune_steps=total - frequency * (events - 1),
                                            groups=groups, lr=lr, verbose=verbose,
                                            run_eagerly=opts.pop("run_eagerly", runs_eagerly(data)),
                                            callbacks=callbacks, **cost, **floor, **opts)
        history.pop("snapshots", None)
        info = {"method": method, "criterion": criterion, "sparsity": history["sparsity"],
                "events": history["events"], "reached": history["reached"], "at_floor": history["at_floor"],
                "min_fraction": history["min_fraction"], "trimmed": 0}
    recalibrate_batchnorm(model, data.train)
    return model, masks, info
