"""Re-initialisation of a (pruned, stripped) architecture for training from scratch.

Garg et al. 2023 rebuild each pruned configuration as a thinner dense network with a
random initialisation and retrain it; :func:`reinitialize` does that for any model.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np


def _reseed(config: Any, rng: np.random.Generator) -> Any:
    """Gives every serialized initializer in a layer config a fresh seed."""
    if isinstance(config, dict):
        if config.get("module", "").startswith("keras.initializers") and isinstance(config.get("config"), dict):
            inner = dict(config["config"])
            if "seed" in inner:
                inner["seed"] = int(rng.integers(0, 2**31 - 1))
            return {**config, "config": inner}
        return {k: _reseed(v, rng) for k, v in config.items()}
    if isinstance(config, list):
        return [_reseed(v, rng) for v in config]
    return config


def reinitialize(model: keras.Model, seed: int | None = None) -> keras.Model:
    """Same architecture (layer names, inputs, outputs), freshly initialised weights.

    Every layer is rebuilt from its config with each initializer given a new seed (drawn
    from ``seed``; ``None`` = nondeterministic), so even layers created with a fixed
    initializer seed get new weights; BatchNormalization statistics start afresh. Nested
    models are rebuilt too. The returned model is not compiled; ``model`` is untouched.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"reinitialize expects a keras.Model, got {type(model).__name__}")
    rng = np.random.default_rng(seed)

    def clone(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config(_reseed(layer.get_config(), rng))

    fresh = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not fresh.built:
        fresh.build(model.input_shape)
    return fresh
