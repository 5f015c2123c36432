"""Embedded datasets (generated locally, no downloads) and loaders for real datasets on disk.

Embedded, each with `generate(...)` -> numpy arrays, `load(...)` -> batched
`tf.data.Dataset` of `(inputs, targets)` dicts, and `tasks()` -> `Task` specs:

- `synthetic_scenes`: ray-cast indoor scenes; segmentation, depth, normals (NYU-v2 stand-in).
- `multi_digits`: two or three real handwritten digits per canvas; segmentation and
  left / right digit classes (CelebAMask-HQ stand-in).
- `multi_domain`: four domains with their own label spaces (Visual Decathlon stand-in).

Importing this package registers them as tensorflow-datasets builders
("synthetic_scenes", "multi_digits", "multi_domain"; config "tiny" for quick tests).

Real datasets from a local folder (modules `nyuv2`, `celebamask_hq`, `visual_decathlon`):
`load_nyuv2`, `load_celebamask_hq`, `load_visual_decathlon`, `load_visual_decathlon_mixed`.
"""
from tfmot_mtl.datasets import multi_digits, multi_domain, synthetic_scenes
from tfmot_mtl.datasets import tfds_builders
from tfmot_mtl.datasets.celebamask_hq import celebamask_hq_tasks, load_celebamask_hq
from tfmot_mtl.datasets.nyuv2 import load_nyuv2, nyuv2_tasks
from tfmot_mtl.datasets.spec import load_spec
from tfmot_mtl.datasets.visual_decathlon import (
    load_visual_decathlon, load_visual_decathlon_mixed, visual_decathlon_domains,
    visual_decathlon_tasks)

__all__ = [
    "synthetic_scenes", "multi_digits", "multi_domain", "tfds_builders",
    "load_nyuv2", "nyuv2_tasks", "load_celebamask_hq", "celebamask_hq_tasks",
    "load_visual_decathlon", "load_visual_decathlon_mixed", "visual_decathlon_domains",
    "visual_decathlon_tasks", "load_spec",
]
