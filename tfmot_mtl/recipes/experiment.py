"""Shared experiment plumbing: embedded datasets by name, reference models, fit, atomic saving.

Used by the CLI, the demo, the examples and the benchmarks so that each runs the same
recipe. A user's data for a user's model: :mod:`tfmot_mtl.app.model_data`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import keras

from tfmot_mtl.utils.atomic import atomic_save_model, atomic_write
from tfmot_mtl.utils.jsonable import jsonable

DATASETS = ("synthetic_scenes", "multi_digits")


@dataclass(frozen=True)
class TrainingConfig:
    """Data size, model width and optimizer budget of one training run (the demo's by default)."""

    n_train: int = 1500
    n_test: int = 300
    resolution: int = 64
    width: float = 1.0
    epochs: int = 8
    lr: float = 2e-3
    batch_size: int = 32
    seed: int = 0


@dataclass
class Data:
    """Train/test datasets of `(inputs, {task: target})` batches and their task specs."""

    name: str
    train: Any
    test: Any
    tasks: list
    input_shape: tuple
    validation: Any = None

    def representative(self, batches: int = 8):
        """Inputs-only batches for int8 calibration."""
        return self.train.take(batches).map(lambda x, y: x)


def load_data(name: str, n_train: int | None = None, n_test: int | None = None,
              batch_size: int = 32, resolution: int = 64, seed: int = 0, n_val: int = 0) -> Data:
    """An embedded multi-task dataset by name ("synthetic_scenes" or "multi_digits").

    ``n_val > 0`` adds ``Data.validation``: that many images from the training generator
    with another seed (new scenes of the training distribution, never the test images),
    for early stopping and model selection.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {DATASETS}")
    from tfmot_mtl import datasets

    module = getattr(datasets, name)
    train = module.load("train", n=n_train, batch_size=batch_size, resolution=resolution, seed=seed)
    test = module.load("test", n=n_test, batch_size=batch_size, resolution=resolution, seed=seed,
                       shuffle=False)
    validation = None
    if n_val:
        validation = module.load("train", n=n_val, batch_size=batch_size, resolution=resolution,
                                 seed=seed + 7919, shuffle=False)
    return Data(name, train, test, module.tasks(), (resolution, resolution, 3), validation)


def steps_per_epoch(dataset) -> int:
    """Batches per pass over a finite dataset (counted when the cardinality is unknown)."""
    n = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    if n < 0:
        n = sum(1 for _ in dataset)
    return max(1, n)


# --------------------------------------------------------------------------- a user's data


def build_model(name: str, tasks: Sequence, input_shape: tuple, width: float = 1.0,
                seed: int = 0, **kwargs) -> keras.Model:
    """A reference model by name with deterministic initial weights."""
    from tfmot_mtl import models

    keras.utils.set_random_seed(seed)
    return models.build(name, tasks, input_shape=input_shape, width=width, **kwargs)


def compile_model(model: keras.Model, tasks: Sequence, lr: float = 2e-3, optimizer: str = "adam",
                  weight_decay: float = 0.0, jit_compile: bool = False) -> keras.Model:
    """Compiles with per-task losses. XLA is off by default: on CPU its compile time
    dominates short runs and its steps were not faster for these models."""
    from tfmot_mtl.tasks import compile_args

    if optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = keras.optimizers.Adam(lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
    model.compile(optimizer=opt, jit_compile=jit_compile, **compile_args(tasks))
    return model


def fit(model: keras.Model, data: Data, epochs: int, lr: float = 2e-3, callbacks: Sequence = (),
        verbose: int = 2, compile: bool = True, **compile_kwargs) -> keras.callbacks.History:
    """Compiles (unless told not to) and fits on `data.train`, with Keras progress output."""
    if compile:
        compile_model(model, data.tasks, lr=lr, **compile_kwargs)
    return model.fit(data.train, epochs=epochs, callbacks=list(callbacks), verbose=verbose)


def evaluate(model, data: Data) -> dict:
    from tfmot_mtl.tasks import evaluate as _evaluate

    return _evaluate(model, data.test, data.tasks)


def save_model(model: keras.Model, path: str | os.PathLike) -> str:
    """Saves a `.keras` file atomically (a crash never leaves half a file in its place)."""
    return atomic_save_model(model, path)


def write_json(path: str | os.PathLike, obj: Any) -> str:
    atomic_write(path, json.dumps(jsonable(obj), indent=2))
    return os.fspath(path)
