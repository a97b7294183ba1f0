"""Canonizers: rewrites of the layer graph, applied before rules are assigned, that leave the forward pass unchanged.

:func:`fold_batch_norm` merges every Convolution/InnerProduct with the BatchNorm and Scale layers that follow it
into one node, so that the linear rule sees one linear map ``z = W'·x + b'`` (zennit's canonizers do the same):
with the affine layers y = a·x + c applied in turn, W' = a ⊙ W (per output row) and b' = a·b + c. Layer indices
stay as they are: the merged node keeps the linear layer's index and type, the absorbed BatchNorm/Scale nodes stay
in place with no inputs and outputs and the rule :class:`~lrp_cli.rules.Folded`.
"""

from __future__ import annotations

import numpy as np

from .layers.affine import ChannelAffine
from .layers.base import Layer
from .layers.linear import LinearLayer
from .net import Net, Node
from .rules import Folded, Rule


class FoldedChain(Layer):
    """A linear layer and the affine layers after it, as one node.

    forward: the layers one after the other (the same arithmetic as the unfolded net, bit for bit), keeping the
    linear layer's own state (e.g. its im2col columns) for the relevance pass; relevance: the linear layer with the
    folded weights, whose output is the chain's output."""

    def __init__(self, head: LinearLayer, affines: list[ChannelAffine]):
        super().__init__(head.name, head.param, ())
        self.head, self.affines = head, affines
        weight = head.weight
        bias = head.bias if head.bias is not None else np.zeros(weight.shape[0], np.float32)
        for affine in affines:
            scale = affine.weight
            weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
            bias = bias * scale + (affine.bias if affine.bias is not None else 0)
        self.folded = head.with_parameters(weight.astype(np.float32), bias.astype(np.float32))

    @property
    def forward_caches(self) -> tuple[str, ...]:
        return self.head.forward_caches

    def forward(self, bottoms):
        tops, state = self.head.forward(bottoms)
        for affine in self.affines:
            tops, _ = affine.forward(tops)
        return tops, state

    def supports(self, rule: Rule) -> bool:
        return self.folded.supports(rule)

    def relevance(self, rule, saved, top_relevance):
        return self.folded.relevance(rule, saved, top_relevance)


class Absorbed(Layer):
    """The place of a BatchNorm/Scale layer folded into the linear layer ``into``: no inputs, no outputs."""

    def __init__(self, name: str, into: str):
        super().__init__(name, None, ())
        self.into = into

    def forward(self, bottoms):
        return [], {}

    def supports(self, rule: Rule) -> bool:
        return isinstance(rule, Folded)


def _consumers(net: Net) -> dict[int, list[int]]:
    """Node index → indices of the nodes that read one of its tops (the latest producer of a blob name)."""
    consumers: dict[int, list[int]] = {}
    producer: dict[str, int] = {}
    for node in net.nodes:
        for blob in node.bottoms:
            if blob in producer:
                consumers.setdefault(producer[blob], []).append(node.index)
        for blob in node.tops:
            producer[blob] = node.index
    return consumers


def fold_batch_norm(net: Net, first: int, start: int) -> Net:
    """The net with every Convolution/InnerProduct → BatchNorm/Scale chain inside [first, start] merged (module
    docstring). A chain continues while the current node's output has exactly one consumer, a one-input affine
    layer at an index ≤ ``start``."""
    consumers = _consumers(net)
    nodes = list(net.nodes)
    for node in net.nodes:
        if node.type not in ("Convolution", "InnerProduct") or not first <= node.index <= start:
            continue
        chain = []
        last = node.index
        while len(consumers.get(last, [])) == 1:
            nxt = net.nodes[consumers[last][0]]
            if not isinstance(nxt.layer, ChannelAffine) or len(nxt.bottoms) != 1 or nxt.index > start:
                break
            chain.append(nxt)
            last = nxt.index
        if not chain:
            continue
        merged = FoldedChain(node.layer, [n.layer for n in chain])
        nodes[node.index] = Node(node.index, node.name, node.type, node.bottoms, chain[-1].tops, merged)
        for absorbed in chain:
            nodes[absorbed.index] = Node(absorbed.index, absorbed.name, absorbed.type, (), (),
                                         Absorbed(absorbed.name, node.name))
    return net.with_nodes(nodes)
