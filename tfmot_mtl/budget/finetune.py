"""Fine-tuning a stripped multi-domain model, on labels or distilled from the unpruned model.

A multi-domain model has one output per domain, and each example trains only its own
domain's head: `domain_targets` gives every output a target and a 0/1 sample weight.
`keras.distillation.Distiller` (Keras 3.15) ignores sample weights, in its student loss and
in its distillation losses, and so does `MultiTaskDistiller`, built on it: applied to the
per-domain outputs it would train every head on the other domains' examples (as class 0)
and distil every head on images of other domains.

Both models are therefore wrapped to have one output, the logits of each example's own
domain (:class:`OwnDomainLogits`: every head padded to the largest class count with a very
negative logit, the row picked by the "domain" input). The wrapped pair fits the stock
``keras.distillation.Distiller`` with ``LogitsDistillation`` (KL divergence of the
temperature-softened probabilities, times T^2), and the supervised loss is plain sparse
cross-entropy on the raw labels, with no sample weights. A padded class has probability 0
under both models, so it adds nothing to either loss. The wrapper shares its layers with
the stripped model: training the wrapper trains the model.
"""
from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

PAD_LOGIT = -1e4


class OwnDomainLogits(keras.layers.Layer):
    """``{domain name: (B, K_d) logits}`` and ``domain`` (B,) -> (B, max K_d): each example's
    own head, padded with ``PAD_LOGIT`` (probability 0 after a softmax)."""

    def __init__(self, domain_names: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.domain_names = [str(n) for n in domain_names]

    def call(self, outputs, domain):
        width = max(int(outputs[n].shape[-1]) for n in self.domain_names)
        rows = [ops.pad(ops.cast(outputs[n], "float32"), [[0, 0], [0, width - int(outputs[n].shape[-1])]],
                        constant_values=PAD_LOGIT) for n in self.domain_names]
        stacked = ops.stack(rows, axis=1)  # (B, D, K)
        index = ops.cast(ops.reshape(domain, (-1,)), "int32")
        select = ops.one_hot(index, len(self.domain_names), dtype="float32")[:, :, None]
        return ops.sum(stacked * select, axis=1)

    def get_config(self):
        return {**super().get_config(), "domain_names": list(self.domain_names)}


def own_domain_model(model: keras.Model, domain_names: Sequence[str]) -> keras.Model:
    """``model`` (inputs {"image", "domain"}, one output per domain) with one output: the
    logits of each example's own domain. Shares its layers with ``model``."""
    inputs = {k: keras.Input(batch_shape=v.shape, dtype=v.dtype, name=k) for k, v in model.input.items()}
    outputs = model(inputs)
    missing = sorted(set(domain_names) - set(outputs))
    if missing:
        raise ValueError(f"the model has no outputs for domains {missing}; its outputs are {sorted(outputs)}.")
    logits = OwnDomainLogits(domain_names, name="own_domain_logits")(outputs, inputs["domain"])
    return keras.Model(inputs, logits, name=f"{model.name}_own_domain")


def labels_only(dataset):
    """Mixed batches ``(x, {"label": y})`` -> ``(x, y)``."""
    return dataset.map(lambda x, y: (x, y["label"]))


def finetune_stripped(model: keras.Model, data, epochs: int, domain_names: Sequence[str],
                      teacher: keras.Model | None = None, lr: float = 5e-4, temperature: float = 2.0,
                      student_loss_weight: float = 0.5, validation: Any = None,
                      patience: int | None = None, verbose: int = 0,
                      eager: bool = False) -> keras.callbacks.History:
    """Trains the stripped multi-domain ``model`` in place for ``epochs`` epochs.

    Args:
        model: e.g. `strip_domain_model`'s result (or any model with per-domain outputs).
        data: mixed batches ``(x, {"label": y})`` as `multi_domain.load` makes them.
        teacher: the unpruned (switched) model to distil from; None trains on labels only.
        lr: initial learning rate (cosine decay to 0 over the epochs).
        temperature, student_loss_weight: as in ``keras.distillation`` (share of the label loss).
        validation: mixed batches for early stopping (with ``patience``: stop when the
            validation loss has not improved for that many epochs, restore the best weights).

    Returns:
        The Keras History of the run.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"`epochs` must be an integer >= 0, got {epochs!r}.")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"`patience` must be an integer >= 1 or None, got {patience!r}.")
    if patience is not None and validation is None:
        raise ValueError("early stopping (`patience`) needs `validation` batches.")
    if not epochs:
        return keras.callbacks.History()
    student = own_domain_model(model, domain_names)
    trainer = student
    if teacher is not None:
        trainer = keras.distillation.Distiller(
            own_domain_model(teacher, domain_names), student,
            [keras.distillation.LogitsDistillation(temperature=float(temperature))],
            student_loss_weight=float(student_loss_weight), name="domain_distiller")
    train = labels_only(data)
    steps = int(train.cardinality())
    steps = steps if steps > 0 else sum(1 for _ in train)
    schedule = keras.optimizers.schedules.CosineDecay(float(lr), max(1, epochs * steps))
    trainer.compile(keras.optimizers.Adam(schedule),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False,
                    run_eagerly=eager)
    callbacks = []
    if patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True))
    return trainer.fit(train, epochs=epochs, validation_data=None if validation is None else labels_only(validation),
                       callbacks=callbacks, verbose=verbose)
