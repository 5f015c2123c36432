"""TensorBoard scalars of a pruning run (overall sparsity, pruned channels, per-group sparsity),
written with ``tf.summary`` at pruning events."""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf


class PruningSummaries:
    """A ``tf.summary`` file writer in ``log_dir`` for the pruning events' numbers."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writer = tf.summary.create_file_writer(log_dir)

    def write(self, step: int, sparsity: float, pruned: int, per_group: Mapping[str, float]) -> None:
        with self._writer.as_default(step=int(step)):
            _scalar("pruning/sparsity", sparsity, step)
            _scalar("pruning/pruned_channels", pruned, step)
            for gid, value in per_group.items():
                _scalar(f"pruning/group/{gid}", value, step)

    def flush(self) -> None:
        self._writer.flush()


def _scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar without needing the tensorboard package (``tf.summary.scalar`` does):
    ``tf.summary.write`` with the scalars plugin's metadata."""
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step),
                     metadata=meta.SerializeToString())
