"""Task specifications for multi-task models: what each output predicts and how it is scored.

A :class:`Task` names one model output, its kind, its training loss (built from
``keras.ops``) and its evaluation metrics. Metrics accumulate exactly over a whole
dataset in numpy (:meth:`Task.accumulator`); :func:`evaluate` runs a model over a
``tf.data`` dataset and :func:`delta_m` compares two sets of results.

Modules, each importing only the ones above it:

- ``losses``: the masked training losses of the kinds;
- ``metrics``: exact dataset-wide metric accumulators;
- ``specs``: :class:`Task` and its constructors (``segmentation``, ``depth``, ...);
- ``evaluation``: :func:`evaluate`, :func:`delta_m` and result tables;
- ``infer``: :func:`infer_tasks`, the tasks of a user's model from its compiled losses.
"""
from tfmot_mtl.tasks.evaluation import (
    defined_metrics,
    delta_m,
    delta_m_breakdown,
    delta_m_per_task,
    evaluate,
    format_results,
    print_results,
)
from tfmot_mtl.tasks.files import load_tasks
from tfmot_mtl.tasks.infer import infer_tasks
from tfmot_mtl.tasks.losses import (
    MaskedBinaryCrossEntropy,
    MaskedCosineDistance,
    MaskedL1,
    MaskedSparseCrossEntropy,
    batch_mean,
    default_loss,
    unit_vectors,
)
from tfmot_mtl.tasks.metrics import (
    HIGHER_IS_BETTER,
    KIND_METRICS,
    BinaryAccumulator,
    ConfusionAccumulator,
    DepthAccumulator,
    NormalsAccumulator,
    make_accumulator,
)
from tfmot_mtl.tasks.specs import (
    DENSE_KINDS,
    IMAGE_KINDS,
    KINDS,
    Task,
    TasksLike,
    as_task_list,
    binary,
    classification,
    compile_args,
    depth,
    normals,
    segmentation,
)
