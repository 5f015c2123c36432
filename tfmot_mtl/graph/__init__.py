"""The channel graph of a Keras model: which channels are coupled, and which weights each owns.

* :mod:`~tfmot_mtl.graph.walk`: a model flattened to one functional graph of layers and
  operations (nested models inlined, composite layers traced);
* :mod:`~tfmot_mtl.graph.trace`: the tracer that opens a composite layer's ``call``;
* :mod:`~tfmot_mtl.graph.records`: the records a graph holds (groups, slices, axes, fold sites);
* :mod:`~tfmot_mtl.graph.channel_graph`: :class:`ChannelGraph`, built by propagating the
  layer rules of :mod:`tfmot_mtl.layers` over the flat graph.
"""
from tfmot_mtl.graph.channel_graph import ChannelGraph, GroupId
from tfmot_mtl.graph.records import Axis, ChannelGroup, FoldSite, Slice

__all__ = ["Axis", "ChannelGraph", "ChannelGroup", "FoldSite", "GroupId", "Slice"]
