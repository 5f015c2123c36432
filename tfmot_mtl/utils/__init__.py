"""Utilities any module may import: atomic file writes (:mod:`~tfmot_mtl.utils.atomic`), reading
``.keras`` files (:mod:`~tfmot_mtl.utils.model_files`) and every private Keras access
(:mod:`~tfmot_mtl.utils._keras_compat`). They import no other tfmot_mtl module.
"""
