"""tf.distribute helpers: make Keras 3 ``fit`` run under MultiWorkerMirroredStrategy.

Keras 3.15's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` with more than one
worker (keras-team/keras#20585):

1. ``_maybe_symbolic_build`` passes a whole nested batch to ``strategy.reduce``, which the
   collective path cannot convert to a tensor ("Attempt to convert a value (PerReplica...)
   ... to a Tensor");
2. ``reduce_per_replica`` reduces the scalar logs with ``strategy.reduce("MEAN", v, axis=0)``
   ("Invalid reduction dimension 0 for input with 0 dimensions").

:func:`patch_keras_multi_worker_fit` replaces both (private Keras API, tested with Keras
3.15); every other strategy keeps Keras's own code path. ``tests/test_distributed.py`` checks
that the unpatched ``fit`` still fails, so the patch can go once Keras fixes it.
"""
from __future__ import annotations

import warnings

import keras
import tensorflow as tf

TESTED_KERAS = "3.15"
_PATCHED = "_tfmot_mtl_multi_worker_patch"


def patch_keras_multi_worker_fit() -> bool:
    """Lets ``fit`` / ``evaluate`` / ``predict`` run under MultiWorkerMirroredStrategy.

    Call it once per process, after creating the strategy and before ``fit``. Idempotent;
    returns True when the patch is (now) in place. Only multi-worker strategies take the
    patched path. On a Keras version other than the tested one it still patches, with a
    warning, since the private functions it wraps may have changed.
    """
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, _PATCHED, False):
        return True
    if not keras.__version__.startswith(TESTED_KERAS):
        warnings.warn(f"patch_keras_multi_worker_fit was tested with Keras {TESTED_KERAS}.x; this is "
                      f"Keras {keras.__version__}. Check that multi-worker fit still needs it.", stacklevel=2)
    multi = trainer._collective_all_reduce_multi_worker
    reduce_per_replica, build = trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_logs(values, strategy, reduction):
        if reduction == "auto" and multi(strategy):  # logs are scalars: reduce without an axis
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and multi(self.distribute_strategy):
            for _, _, it in iterator:  # shapes from this worker's first replica
                batch = next(it)
                break
            local = self.distribute_strategy.experimental_local_results
            iterator, data_batch = None, tf.nest.map_structure(lambda v: local(v)[0], batch)
        return build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_logs
    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    setattr(trainer, _PATCHED, True)
    return True
