"""Compress-and-recover recipes: dense -> find channels -> strip -> fine-tune from the parent.

Modules: ``train`` (the training phases), ``find`` (the find phase), ``run`` (a whole run).

:func:`finetune` trains a (stripped) model for a number of epochs with a cosine-decay
learning rate, either on labels with a task weighting or distilled from its dense parent
(:class:`~tfmot_mtl.distill.MultiTaskDistiller`), with optional early stopping on a
validation set. :func:`find_channels` runs one of the methods that make channel masks
(group sparsity with the proximal step, or iterative importance pruning) starting from
the trained dense weights. :func:`tfmot_mtl.compress` chains both around ``strip_channels``, and
:func:`run` is the whole experiment with its fair baseline: the dense parent, the
compressed model, and a dense model trained for the same total number of epochs as the
compressed one has seen (dense + find + fine-tune), side by side.
"""
from __future__ import annotations

from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
from tfmot_mtl.recipes.find import find_channels
from tfmot_mtl.recipes.run import RecipeResult, run
from tfmot_mtl.recipes.train import (BASELINES, EAGER_MAX_STEPS, METHODS, Budget, Epochs, cosine_adam, finetune,
                                     format_budget, phase_budget, recover, train_dense, train_same_budget,
                                     validation_size)

__all__ = ["BASELINES", "EAGER_MAX_STEPS", "METHODS", "Budget", "Epochs", "RecipeResult", "cosine_adam",
           "find_channels", "finetune", "format_budget", "phase_budget", "recalibrate_batchnorm", "recover", "run",
           "train_dense", "train_same_budget", "validation_size"]
