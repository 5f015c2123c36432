"""tf.distribute helpers: make Keras 3 ``fit`` run under MultiWorkerMirroredStrategy.

Keras 3.15's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` with more than one
worker (keras-team/keras#20585):

1. ``_maybe_symbolic_build`` passes a whole nested batch to ``strategy.reduce``, which the
   collective path cannot convert to a tensor ("Attempt to convert a value (PerReplica...)
   ... to a Tensor");
2. ``reduce_per_replica`` reduces the scalar logs with ``strategy.reduce("MEAN", v, axis=0)``
   ("Invalid reduction dimension 0 for input with 0 dimensions").

:func:`patch_keras_multi_worker_fit` replaces both (private Keras API, tested with Keras
3.15; the patch itself is :func:`tfmot_mtl.utils._keras_compat.patch_multi_worker_fit`); every
other strategy keeps Keras's own code path. ``tests/test_distributed.py`` checks that the unpatched
``fit`` still fails, so the patch can go once Keras fixes it.
"""
from __future__ import annotations

import warnings

import keras

from tfmot_mtl.utils import _keras_compat

TESTED_KERAS = _keras_compat.KERAS_TESTED


def patch_keras_multi_worker_fit() -> bool:
    """Lets ``fit`` / ``evaluate`` / ``predict`` run under MultiWorkerMirroredStrategy.

    Call it once per process, after creating the strategy and before ``fit``. Idempotent;
    returns True when the patch is (now) in place. Only multi-worker strategies take the
    patched path. On a Keras version other than the tested one it still patches, with a
    warning, since the private functions it wraps may have changed; a ``KerasCompatError``
    (a RuntimeError) names the private function when one is gone.
    """
    if _keras_compat.multi_worker_fit_patched():
        return True
    if not _keras_compat.keras_is_tested_version():
        warnings.warn(f"patch_keras_multi_worker_fit was tested with Keras {TESTED_KERAS}.x; this is "
                      f"Keras {keras.__version__}. Check that multi-worker fit still needs it.", stacklevel=2)
    return _keras_compat.patch_multi_worker_fit()
