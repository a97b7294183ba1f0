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
from .layers.base import DERIVED, Layer
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

    @property
    def folded(self) -> LinearLayer:
        """The linear layer with the folded weights (made when needed; kept in :data:`DERIVED` while it fits, so a
        large net does not hold a second copy of its convolutions)."""
        sources = [self.head.weight] + [a.weight for a in self.affines]
        return DERIVED.get(("folded",), sources, self._fold)

    def _fold(self) -> LinearLayer:
        weight = self.head.weight
        bias = self.head.bias if self.head.bias is not None else np.zeros(weight.shape[0], np.float32)
        for affine in self.affines:
            scale = affine.weight
            weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
            bias = bias * scale + (affine.bias if affine.bias is not None else 0)
        return self.head.with_parameters(weight.astype(np.float32), bias.astype(np.float32))

    @property
    def forward_caches(self) -> tuple[str, ...]:
        return self.head.forward_caches

    def forward(self, bottoms):
        tops, state = self.head.forward(bottoms)
        for affine in self.affines:  # the head's output is its own (never kept): overwritten, not copied
            affine.forward_in_place(tops[0])
        return tops, state

    def supports(self, rule: Rule) -> bool:
        return self.head.supports(rule)  # the folded layer is of the head's class

    def reads(self, rule: Rule) -> tuple[str, ...]:
        return self.head.reads(rule)

    def relevance(self, rule, saved, top_relevance):
        return self.folded.relevance(rule, saved, top_relevance)


class AffineChain(ChannelAffine, register=False):
    """Consecutive per-channel affine layers (BatchNorm → Scale not after a convolution, as in pre-activation
    nets), as one: forward runs them one after the other (bit for bit the unmerged arithmetic); for relevance
    they are one affine map y = a·x + c, with a = Π a_i and c folded likewise (one rule step, not one per layer)."""

    def __init__(self, affines: list[ChannelAffine]):
        head = affines[0]
        Layer.__init__(self, head.name, head.param, ())
        self.affines = affines
        scale = np.ones(head.weight.shape, np.float64)
        shift = np.zeros(head.weight.shape, np.float64)
        for affine in affines:
            scale = scale * affine.weight
            shift = shift * affine.weight + (affine.bias if affine.bias is not None else 0)
        self.weight, self.bias = scale.astype(np.float32), shift.astype(np.float32)
        self.type = head.type

    def forward(self, bottoms):
        for affine in self.affines:
            bottoms, _ = affine.forward(bottoms)
        return bottoms, {}


class Absorbed(Layer):
    """The place of a BatchNorm/Scale layer folded into the linear layer ``into``: no inputs, no outputs."""

    def __init__(self, name: str, into: str):
        super().__init__(name, None, ())
        self.into = into

    def forward(self, bottoms):
        return [], {}

    def supports(self, rule: Rule) -> bool:
        return isinstance(rule, Folded)

    def reads(self, rule: Rule) -> tuple[str, ...]:
        return ()


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


def _affine_chain(net: Net, consumers: dict[int, list[int]], head: Node, start: int) -> list[Node]:
    """The one-input affine layers after ``head``, each the only consumer of the one before, up to ``start``."""
    chain = []
    last = head.index
    while len(consumers.get(last, [])) == 1:
        nxt = net.nodes[consumers[last][0]]
        if not isinstance(nxt.layer, ChannelAffine) or len(nxt.bottoms) != 1 or nxt.index > start:
            break
        chain.append(nxt)
        last = nxt.index
    return chain


def fold_batch_norm(net: Net, first: int, start: int) -> Net:
    """The net with every Convolution/InnerProduct → BatchNorm/Scale chain inside [first, start] merged, and
    every chain of affine layers after something else merged into one affine layer (module docstring). A chain
    continues while the current node's output has exactly one consumer, a one-input affine layer at an index ≤
    ``start``."""
    consumers = _consumers(net)
    nodes = list(net.nodes)
    absorbed_into: set[int] = set()
    for node in net.nodes:
        linear = node.type in ("Convolution", "InnerProduct")
        affine = isinstance(node.layer, ChannelAffine) and len(node.bottoms) == 1
        if not (linear or affine) or node.index in absorbed_into or not first <= node.index <= start:
            continue
        chain = _affine_chain(net, consumers, node, start)
        if not chain:
            continue
        absorbed_into.update(n.index for n in chain)
        layers = [n.layer for n in chain]
        merged = FoldedChain(node.layer, layers) if linear else AffineChain([node.layer, *layers])
        nodes[node.index] = Node(node.index, node.name, node.type, node.bottoms, chain[-1].tops, merged)
        for absorbed in chain:
            nodes[absorbed.index] = Node(absorbed.index, absorbed.name, absorbed.type, (), (),
                                         Absorbed(absorbed.name, node.name))
    return net.with_nodes(nodes)
