"""The layer graph in Caffe's order (Split layers included), the forward pass and the relevance pass.

Caffe's *layer index* is the position in its ``layers_`` vector: the prototxt layers that survive TEST-phase
filtering, an ``Input`` layer counting as a layer, plus a Split layer inserted right after the producer of every
blob that feeds more than one layer (and before everything for a net input that does).
``lastlayerindex``, ``firstlayerindex`` and the aux threshold all count in this index.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .caffe import caffe_pb2
from .errors import ModelError, RelevanceError
from .layers import Layer, Saved, build_layer
from .layers.base import ShapeOnly
from .rules import Rule


@dataclass
class Node:
    """One entry of Caffe's ``layers_``: its index, names of its (split-renamed) bottoms and tops, the layer."""

    index: int
    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    layer: Layer


@dataclass
class Forward:
    """A forward pass over a batch: per node what it read and wrote, and every blob's final value."""

    saved: list[Saved]
    blobs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)



def _split_layer_name(layer: str, blob: str, top_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split"


def _split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


class Net:
    """A Caffe net on numpy: ``forward`` (N×C×H×W float32) and ``relevance`` from a start layer downwards."""

    def __init__(self, netdef):
        self.name = netdef.name
        if len(netdef.inputs) != 1:
            raise ModelError(f"net '{netdef.name}' must have exactly one input blob, found {len(netdef.inputs)}")
        self.input_name = netdef.inputs[0].name
        self.input_shape = tuple(int(d) for d in netdef.inputs[0].shape)
        self.nodes = self._build(netdef)
        available: set[str] = {self.input_name}
        for node in self.nodes:  # a blob consumed by an in-place layer stays available: it is that layer's top
            available.difference_update(node.bottoms)
            available.update(node.tops)
        self.output_names = sorted(available)  # Caffe keeps them in a std::set: sorted by name
        #: every blob's shape for one image (batch 1), each layer's parameters checked against its inputs
        self.shapes = self._infer_shapes()

    #: the most that all blobs of one image may take (float32); a net that needs more is refused when it is built
    MAX_BLOB_BYTES_PER_IMAGE = 4 << 30

    def _infer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Blob name → shape for one image, from each layer's :meth:`~lrp_cli.layers.base.Layer.output_shapes`:
        a ModelError naming the layer for parameters that cannot work on its inputs (a kernel larger than the
        padded input, a zero stride, mismatched shapes, …) and for blobs too large to hold, before any image."""
        shape = (1, *self.input_shape[1:])
        if any(d < 1 for d in self.input_shape):
            raise ModelError(f"net '{self.name}': the input shape {self.input_shape} must have positive dimensions")
        shapes = {self.input_name: shape}
        total = 0
        for node in self.nodes:
            if node.type == "Input":
                tops = [shape] * len(node.tops)
            else:
                tops = node.layer.output_shapes([shapes[b] for b in node.bottoms])
            for name, top in zip(node.tops, tops, strict=True):
                if min(top, default=1) < 1:
                    raise node.layer.fail(f"would produce an empty blob of shape {top}")
                shapes[name] = top
                total += int(np.prod(top, dtype=np.float64)) * 4
            if total > self.MAX_BLOB_BYTES_PER_IMAGE:
                raise ModelError(
                    f"net '{self.name}': its blobs would take {total / 2**30:.3g} GiB per image by layer "
                    f"'{node.name}' (input {self.input_shape[1:]}); lrp_cli holds at most "
                    f"{self.MAX_BLOB_BYTES_PER_IMAGE >> 30} GiB"
                )
        return shapes

    def with_nodes(self, nodes: list[Node]) -> Net:
        """A copy of this net with other nodes (a canonizer's result, :mod:`lrp_cli.canonize`)."""
        twin = object.__new__(Net)
        twin.__dict__.update(self.__dict__)
        twin.nodes = list(nodes)
        return twin

    # -- graph ----------------------------------------------------------------------------------------------------
    def _build(self, netdef) -> list[Node]:
        layers = list(netdef.layers)
        last_top: dict[str, tuple[int, int]] = {}
        for layer in layers:
            if layer.type == "Input":
                break
        else:
            last_top[self.input_name] = (-1, 0)
        source: dict[tuple[int, int], tuple[int, int]] = {}
        uses: Counter = Counter()
        for i, layer in enumerate(layers):
            for j, blob in enumerate(layer.bottoms):
                if blob not in last_top:
                    raise ModelError(f"layer '{layer.name}' reads blob '{blob}', which no earlier layer produces")
                source[(i, j)] = last_top[blob]
                uses[last_top[blob]] += 1
            for j, blob in enumerate(layer.tops):
                last_top[blob] = (i, j)

        def layer_name(i):
            return "input" if i == -1 else layers[i].name

        nodes: list[Node] = []
        taken: Counter = Counter()

        def add(name, type_name, bottoms, tops, layer):
            nodes.append(Node(len(nodes), name, type_name, tuple(bottoms), tuple(tops), layer))

        def add_split(i, j, blob):
            count = uses[(i, j)]
            if count > 1:
                tops = [_split_blob_name(layer_name(i), blob, j, k) for k in range(count)]
                name = _split_layer_name(layer_name(i), blob, j)
                param = caffe_pb2.LayerParameter(name=name, type="Split", bottom=[blob], top=tops)
                add(name, "Split", [blob], tops, build_layer(name, "Split", param, ()))

        if (-1, 0) in uses:
            add_split(-1, 0, self.input_name)
        for i, layer in enumerate(layers):
            bottoms = list(layer.bottoms)
            for j, blob in enumerate(bottoms):
                src = source[(i, j)]
                if uses[src] > 1:
                    bottoms[j] = _split_blob_name(layer_name(src[0]), blob, src[1], taken[src])
                    taken[src] += 1
            built = build_layer(layer.name, layer.type, layer.param, layer.blobs)
            add(layer.name, layer.type, bottoms, layer.tops, built)
            for j, blob in enumerate(layer.tops):
                add_split(i, j, blob)
        return nodes

    def layer_table(self) -> list[tuple[int, str, str]]:
        """(Caffe layer index, name, type) for every node."""
        return [(n.index, n.name, n.type) for n in self.nodes]

    # -- forward --------------------------------------------------------------------------------------------------
    def forward(self, images: np.ndarray, rules: list[Rule | None] | None = None,
                keep: tuple[str, ...] = ()) -> Forward:
        """Run the net on a batch N×C×H×W (float32; N is free, C×H×W must match the declared input).

        Without ``rules`` every node keeps its inputs, outputs and state, and ``blobs`` every blob. With ``rules``
        (one per node, as :meth:`propagate` takes them) the pass keeps only what the relevance pass reads: of each
        node what its rule's step reads (:meth:`~lrp_cli.layers.base.Layer.reads`; of the rest the shapes), its
        forward caches only where the rule uses them (within :attr:`FORWARD_CACHE_BYTES_PER_IMAGE`), and in
        ``blobs`` the outputs and the blobs named in ``keep``, each other blob dropped after its last reader."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != len(self.input_shape) or images.shape[1:] != self.input_shape[1:]:
            raise ModelError(
                f"net '{self.name}' expects input of shape N×{'×'.join(map(str, self.input_shape[1:]))}, "
                f"got {'×'.join(map(str, images.shape))}"
            )
        blobs: dict[str, np.ndarray] = {self.input_name: images}
        saved: list[Saved] = []
        last_read = {b: node.index for node in self.nodes for b in node.bottoms}
        kept = {*self.output_names, *keep}
        budget = self.FORWARD_CACHE_BYTES_PER_IMAGE * len(images)
        for node in self.nodes:
            if node.type == "Input":
                saved.append(Saved([], [images]))
                blobs[node.tops[0]] = images
                continue
            bottoms = [blobs[b] for b in node.bottoms]
            with np.errstate(all="ignore"):
                tops, extra = node.layer.forward(bottoms)
            for name, value in zip(node.tops, tops, strict=True):
                blobs[name] = value
            if rules is None:
                saved.append(Saved(bottoms, tops, extra))
                continue
            budget = self._keep_caches(node, rules[node.index], extra, budget)
            saved.append(self._needed(node, rules[node.index], bottoms, tops, extra))
            for name in node.bottoms:
                if last_read[name] == node.index and name not in kept and name not in node.tops:
                    del blobs[name]
        return Forward(saved, blobs, {name: blobs[name] for name in self.output_names})

    @staticmethod
    def _needed(node: Node, rule: Rule | None, bottoms, tops, extra) -> Saved:
        """What the relevance pass reads of a node (no rule: nothing), the rest as shapes."""
        reads = node.layer.reads(rule) if rule is not None else ()
        return Saved(
            bottoms if "bottoms" in reads else [ShapeOnly.of(b) for b in bottoms],
            tops if "tops" in reads else [ShapeOnly.of(t) for t in tops],
            extra if "state" in reads else {},
        )

    #: the most a forward pass keeps in forward caches per image (im2col columns: CaffeNet's take 18 MB; past it
    #: they are recomputed where needed)
    FORWARD_CACHE_BYTES_PER_IMAGE = 24 << 20

    def _keep_caches(self, node: Node, rule: Rule | None, extra: dict, budget: int) -> int:
        """Drop the node's forward caches unless its rule uses them and they fit ``budget``; the budget left."""
        for key in node.layer.forward_caches:
            value = extra.get(key)
            if value is None:
                continue
            if rule is not None and rule.uses_forward_caches and value.nbytes <= budget:
                budget -= value.nbytes
            else:
                del extra[key]
        return budget

    # -- relevance ------------------------------------------------------------------------------------------------
    def resolve_start(self, last_layer_index: int) -> int:
        """``lastlayerindex``: −1 → one below the lowest Softmax; −2 → the highest InnerProduct; ≥ 0 → itself."""
        if last_layer_index == -1:
            softmax = [n.index for n in self.nodes if n.type == "Softmax"]
            if not softmax:
                raise RelevanceError("lastlayerindex -1 needs a Softmax layer, and this net has none",
                                     key="lastlayerindex")
            return min(softmax) - 1
        if last_layer_index == -2:
            inner = [n.index for n in self.nodes if n.type == "InnerProduct"]
            if not inner:
                raise RelevanceError("lastlayerindex -2 needs an InnerProduct layer, and this net has none",
                                     key="lastlayerindex")
            return max(inner)
        if last_layer_index < 0:
            raise RelevanceError(f"bad lastlayerindex {last_layer_index} (use -1, -2 or a layer index)",
                                 key="lastlayerindex")
        if last_layer_index >= len(self.nodes):
            raise RelevanceError(f"lastlayerindex {last_layer_index} is beyond the last layer ({len(self.nodes) - 1})",
                                 key="lastlayerindex")
        return last_layer_index

    def check_range(self, start: int, first: int) -> None:
        if not 0 <= first < start:
            raise RelevanceError(f"firstlayerindex {first} must be ≥ 0 and below the start layer index {start}",
                                 key="firstlayerindex")

    @property
    def fc6_index(self) -> int:
        """The original's hard-coded fc6 index 15, generalised: the first InnerProduct (15 in CaffeNet)."""
        inner = [n.index for n in self.nodes if n.type == "InnerProduct"]
        return inner[0] if inner else 15

    def start_values(self, forward: Forward, start: int) -> np.ndarray:
        """The data of the start layer's first top, one row per image (N×K): what relevance is seeded from."""
        data = forward.blobs[self.nodes[start].tops[0]]
        return data.reshape(data.shape[0], -1)

    def initial_relevance(self, forward: Forward, start: int, classes: list[list[int]]) -> dict[str, np.ndarray]:
        """Every top of the start layer: zero, except R[n, c] = data[n, c] for the classes c of image n."""
        relevance = {}
        for top in self.nodes[start].tops:
            data = forward.blobs[top]
            flat = data.reshape(data.shape[0], -1)
            seed = np.zeros_like(flat)
            for n, chosen in enumerate(classes):
                for c in chosen:
                    if not 0 <= c < flat.shape[1]:
                        raise RelevanceError(
                            f"class index {c} is out of range: layer '{self.nodes[start].name}' has {flat.shape[1]} "
                            "outputs per image"
                        )
                    seed[n, c] = flat[n, c]
            relevance[top] = seed.reshape(data.shape)
        return relevance

    def propagate(
        self,
        forward: Forward,
        rules: list[Rule | None],
        start: int,
        first: int,
        relevance: dict[str, np.ndarray],
        on_layer=None,
        release: bool = False,
    ) -> np.ndarray:
        """Relevance from the tops of node ``start`` down through node ``first``, node k by ``rules[k]``; returns the
        relevance at the net input (first == 0) or at the first bottom of node ``first`` (N×…).

        ``on_layer(node, bottom_relevance)``, if given, sees each node's result (e.g. to log relevance sums).
        ``release``: let go of each node's forward state once its step is done (the forward pass is used up).
        """
        self.check_range(start, first)
        relevance = dict(relevance)
        for index in range(start, first - 1, -1):
            node = self.nodes[index]
            if rules[index] is None:  # the Input layer: its top is the net input, where relevance ends
                continue
            tops = [relevance.pop(t, None) for t in node.tops]
            if all(r is None for r in tops):
                continue
            saved = forward.saved[index]
            tops = [np.zeros(t.shape, t.dtype) if r is None else r for r, t in zip(tops, saved.tops, strict=True)]
            with np.errstate(all="ignore"):
                bottoms = node.layer.relevance(rules[index], saved, tops)
            if release:
                forward.saved[index] = None
                del saved
            if on_layer is not None:
                on_layer(node, bottoms)
            for name, r in zip(node.bottoms, bottoms, strict=True):
                relevance[name] = r if name not in relevance else relevance[name] + r
        node = self.nodes[first]
        target = self.input_name if first == 0 or node.type == "Input" else node.bottoms[0]
        result = relevance.get(target)
        if result is None:
            batch = forward.outputs[self.output_names[0]].shape[0]
            result = np.zeros((batch, *self.shapes[target][1:]), np.float32)
        return result.astype(np.float32, copy=False)
