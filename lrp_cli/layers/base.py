"""The layer interface: every layer type has ``forward`` (batch-first) and ``relevance`` (one backward step).

A layer knows nothing of files, formula numbers or layer indices. ``relevance`` receives a rule object
(:mod:`lrp_cli.rules`) chosen by :mod:`lrp_cli.composite`, and dispatches on the rule's *type*: each layer class
marks the method that applies a rule type with ``@handles(RuleType, ...)``; a subclass inherits its bases'
handlers, and a handler for a rule type also serves its subtypes (``Folded`` is a ``Pass``).
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelError, RelevanceError
from ..rules import Rule


@dataclass
class Saved:
    """What a forward pass keeps for the relevance pass of one layer: its inputs, outputs and private state."""

    bottoms: list[np.ndarray]
    tops: list[np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)


class DerivedArrays:
    """Arrays derived from weights (w⁺ and w⁻, the stacked kernels of the fused α-β forms), kept across batches
    within a byte budget, least recently used out first: a small net keeps them all, a large one recomputes what
    does not fit instead of holding several copies of its weights. Keyed by a kind and the identity of the source
    arrays (kept referenced, so an id is never reused while its entry lives); safe across threads."""

    def __init__(self, budget: int):
        self.budget, self.used = budget, 0
        self.items: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def _size(value) -> int:
        """Bytes of an array, a tuple of arrays, or a layer (its weight and bias)."""
        if isinstance(value, tuple):
            return sum(a.nbytes for a in value)
        if isinstance(value, np.ndarray):
            return value.nbytes
        return value.weight.nbytes + (value.bias.nbytes if value.bias is not None else 0)

    def get(self, kind: tuple, sources: list[np.ndarray], make: Callable[[], Any]) -> Any:
        key = (*kind, *(id(a) for a in sources))
        with self.lock:
            hit = self.items.get(key)
            if hit is not None and all(a is b for a, b in zip(hit[0], sources, strict=True)):
                self.items.move_to_end(key)
                return hit[1]
        value = make()
        size = self._size(value)
        with self.lock:
            if size <= self.budget and key not in self.items:
                self.items[key] = (list(sources), value)
                self.used += size
                while self.used > self.budget:
                    _, (_, old) = self.items.popitem(last=False)
                    self.used -= self._size(old)
        return value


#: the process's weight-derived arrays (64 MB: CaffeNet's and SqueezeNet's all fit, 38 and 6 MB)
DERIVED = DerivedArrays(64 << 20)

Handler = Callable[[Any, Rule, Saved, list[np.ndarray]], list[np.ndarray]]


#: What a relevance step may read of a layer's forward pass: its inputs, its outputs, its private state.
EVERYTHING = ("bottoms", "tops", "state")
Reads = tuple[str, ...] | Callable[[Rule], tuple[str, ...]]


def handles(*rule_types: type[Rule], reads: Reads = EVERYTHING) -> Callable[[Handler], Handler]:
    """Mark a layer method ``(self, rule, saved, top_relevance) -> bottom relevance`` as the relevance step for
    these rule types. ``reads``: which parts of :class:`Saved` the step reads the values of (or a function of the
    rule that says so); the forward pass keeps only those — of the others just their shapes (:class:`ShapeOnly`)."""

    def mark(method: Handler) -> Handler:
        @functools.wraps(method)
        def handler(*args):  # a new function, so that one method can serve different rules in different classes
            return method(*args)

        handler.rule_types = rule_types  # collected by Layer.__init_subclass__
        handler.reads = reads
        return handler

    return mark


@dataclass(frozen=True)
class ShapeOnly:
    """What the forward pass keeps of an array whose values no relevance step reads: its shape and type."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @staticmethod
    def of(array) -> ShapeOnly:
        return array if isinstance(array, ShapeOnly) else ShapeOnly(tuple(array.shape), array.dtype)


class Layer:
    """Base class. Subclasses set ``type``, parse their parameters in ``__init__``, implement ``forward`` and mark
    their relevance steps with :func:`handles`."""

    type: ClassVar[str] = ""
    #: keys of the forward state that only save work in some relevance steps (freed when the rule does not use
    #: them: :attr:`lrp_cli.rules.Rule.uses_forward_caches`)
    forward_caches: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[str, type[Layer]]] = {}
    handlers: ClassVar[dict[type[Rule], Handler]] = {}

    def __init__(self, name: str, param: Any, blobs: tuple[np.ndarray, ...]):
        self.name = name
        self.param = param
        self.blobs = tuple(np.asarray(b, dtype=np.float32) for b in blobs)

    def __init_subclass__(cls, register: bool = True, **kwargs):
        """Collect the class's handlers; register it for its ``type`` unless ``register=False`` (a variant that
        the registered class builds itself, e.g. a Scale with a second bottom)."""
        super().__init_subclass__(**kwargs)
        cls.handlers = dict(cls.handlers)  # the base's, then this class's own
        for method in vars(cls).values():
            for rule_type in getattr(method, "rule_types", ()):
                cls.handlers[rule_type] = method
        if cls.type and register:
            Layer.registry[cls.type] = cls

    # -- passes -----------------------------------------------------------------------------------------------
    def forward(self, bottoms: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        """bottoms → (tops, extra state for the relevance pass). Must not modify its inputs."""
        raise NotImplementedError

    def output_shapes(self, bottoms: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The tops' shapes for bottoms of these shapes (batch axis first), checking that the layer's parameters fit
        them (:meth:`fail` otherwise). The net calls it for every layer when it is built, before any image. The
        default: one top of the first bottom's shape (element-wise layers)."""
        return [bottoms[0]]

    def fail(self, problem: str) -> ModelError:
        """The ModelError for a problem with this layer (naming it); raise it."""
        return ModelError(f"{self.describe()}: {problem}")

    def _handler(self, rule: Rule) -> Handler | None:
        for rule_type in type(rule).__mro__:
            if rule_type in self.handlers:
                return self.handlers[rule_type]
        return None

    def supports(self, rule: Rule) -> bool:
        """Whether :meth:`relevance` can apply ``rule`` (checked for every layer before any image is run)."""
        return self._handler(rule) is not None

    def reads(self, rule: Rule) -> tuple[str, ...]:
        """Which parts of its forward pass this layer's step for ``rule`` reads (see :func:`handles`)."""
        handler = self._handler(rule)
        if handler is None:
            return EVERYTHING
        return handler.reads(rule) if callable(handler.reads) else handler.reads

    def relevance(self, rule: Rule, saved: Saved, top_relevance: list[np.ndarray]) -> list[np.ndarray]:
        """Relevance (or gradient) at the tops → at the bottoms, by ``rule``."""
        handler = self._handler(rule) if self.supports(rule) else None
        if handler is None:
            raise RelevanceError(f"{self.describe()} has no relevance step for the rule '{rule}'")
        return handler(self, rule, saved, top_relevance)

    def pass_through(self, rule: Rule, saved: Saved, top_relevance: list[np.ndarray]) -> list[np.ndarray]:
        """Relevance unchanged, reshaped back to the bottoms' shapes. Layers register it for the rules it serves:
        ``pass_through = handles(Pass, Gradient, reads=())(Layer.pass_through)`` (it reads the shapes only)."""
        return [r.reshape(b.shape) for r, b in zip(top_relevance, saved.bottoms, strict=False)]

    def describe(self) -> str:
        return f"layer '{self.name}' ({self.type})"


def build_layer(name: str, type_name: str, param: Any, blobs: tuple[np.ndarray, ...]) -> Layer:
    """The layer object for a prototxt layer, or a ModelError naming it and the supported types."""
    cls = Layer.registry.get(type_name)
    if cls is None:
        supported = ", ".join(sorted(Layer.registry))
        raise ModelError(f"layer '{name}' has unsupported type '{type_name}' (supported: {supported})")
    return cls(name, param, blobs)


def pair(values, h: int, w: int, default: int) -> tuple[int, int]:
    """Caffe's (h, w) from a repeated (or scalar) field and the explicit _h/_w forms."""
    if h or w:
        return int(h), int(w)
    values = list(values) if hasattr(values, "__len__") else ([values] if values else [])
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) >= 2:
        return int(values[0]), int(values[1])
    return default, default


def require_blobs(layer: Layer, count: int) -> None:
    if len(layer.blobs) < count:
        raise ModelError(f"{layer.describe()} needs {count} blob(s) in the caffemodel, found {len(layer.blobs)}")


def check_shape(layer: Layer, what: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Return ``array`` reshaped to ``shape`` (Caffe stores some legacy blobs with leading 1s), or raise."""
    if array.shape == shape:
        return array
    if array.size == int(np.prod(shape)):
        return array.reshape(shape)
    raise ModelError(f"{layer.describe()}: {what} has shape {array.shape}, expected {shape}")
