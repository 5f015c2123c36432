"""Training machinery shared by the three methods' callbacks: steps inside the compiled train
step (:mod:`~tfmot_mtl.training.ingraph`), NaN/Inf guards (:mod:`~tfmot_mtl.training.nonfinite`),
resumable state (:mod:`~tfmot_mtl.training.resume`, :mod:`~tfmot_mtl.training.callbacks`) and
``tf.distribute`` support (:mod:`~tfmot_mtl.training.distribute`).
"""
