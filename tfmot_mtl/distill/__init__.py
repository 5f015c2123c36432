"""Fine-tuning compressed multi-task models: distillation from the dense parent and learned
task weighting.

- :class:`MultiTaskDistiller` / :func:`multitask_distiller`: ``keras.distillation`` with
  per-task distillation losses made from the Task specs (:mod:`.losses`), optional feature
  distillation through 1x1 adapters, and a task weighting of the supervised losses.
- :class:`TaskWeightedModel`: trains any dict-output model with uncertainty weighting
  (Kendall et al. 2018) or dynamic weight averaging (Liu et al. 2019); :mod:`.weighting`.
"""
from tfmot_mtl.distill.distiller import AdaptedFeatureDistillation, MultiTaskDistiller, multitask_distiller
from tfmot_mtl.distill.losses import (
    DISTILLABLE_KINDS,
    SoftBinaryCE,
    SoftTargetKL,
    TaskDistillation,
    TeacherCosine,
    TeacherL1,
    kind_loss,
)
from tfmot_mtl.distill.weighting import (
    SCHEMES,
    DynamicWeightAveraging,
    FixedWeighting,
    TaskWeightedModel,
    TaskWeighting,
    UncertaintyWeighting,
    make_weighting,
)

__all__ = [
    "AdaptedFeatureDistillation", "MultiTaskDistiller", "multitask_distiller", "DISTILLABLE_KINDS",
    "SoftBinaryCE", "SoftTargetKL", "TaskDistillation", "TeacherCosine", "TeacherL1", "kind_loss",
    "SCHEMES", "DynamicWeightAveraging", "FixedWeighting", "TaskWeightedModel", "TaskWeighting",
    "UncertaintyWeighting", "make_weighting",
]
