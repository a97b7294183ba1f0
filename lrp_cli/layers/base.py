"""The layer interface: every layer type has ``forward`` (batch-first) and ``relevance`` (one backward step).

A layer knows nothing of files, formula numbers or layer indices. ``relevance`` receives a *mode* chosen by the
formula table in :mod:`lrp_cli.rules`: for convolution and inner product a :class:`~lrp_cli.rules.LinearRule`
object, for every other layer one of the names in :data:`MODES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelError, RelevanceError

#: Relevance modes of the non-linear layers:
#: ``lrp``: the layer's LRP rule as the original demonstrator applies it for every formula
#: (identity for ReLU and neurons, winner-takes-all for MAX pooling, the §5.4.7 rule for LRN, ...);
#: ``gradient``: the exact derivative (formulas 11 and 99);
#: ``positive``: ReLU passes max(R, 0) (deconvnet, formula 26);
#: ``guided``: ReLU passes max(R, 0)·[x > 0] (guided backprop, formula 166);
#: ``identity``: relevance passes unchanged (e.g. LRN with ``lrn_relevance identity``).
MODES = ("lrp", "gradient", "positive", "guided", "identity")


@dataclass
class Saved:
    """What a forward pass keeps for the relevance pass of one layer."""

    bottoms: list[np.ndarray]
    tops: list[np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)


class Layer:
    """Base class. Subclasses set ``type``, parse their parameters in ``__init__`` and implement the passes."""

    type: ClassVar[str] = ""
    #: number of learned blobs the layer expects (None: not checked here)
    registry: ClassVar[dict[str, type[Layer]]] = {}

    def __init__(self, name: str, param: Any, blobs: tuple[np.ndarray, ...]):
        self.name = name
        self.param = param
        self.blobs = tuple(np.asarray(b, dtype=np.float32) for b in blobs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for t in getattr(cls, "types", (cls.type,)):
            if t:
                Layer.registry[t] = cls

    # -- passes -----------------------------------------------------------------------------------------------
    def forward(self, bottoms: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        """bottoms → (tops, extra state for the relevance pass). Must not modify its inputs."""
        raise NotImplementedError

    def relevance(self, mode: Any, saved: Saved, top_relevance: list[np.ndarray]) -> list[np.ndarray]:
        """Relevance (or gradient) at the tops → at the bottoms, according to ``mode``."""
        handler = getattr(self, f"_relevance_{mode}", None) if isinstance(mode, str) else None
        if handler is None:
            raise RelevanceError(f"layer '{self.name}' ({self.type}) has no relevance rule '{mode}'")
        return handler(saved, top_relevance)

    def supports(self, mode: Any) -> bool:
        """Whether :meth:`relevance` can apply ``mode`` (checked for every layer before any image is run)."""
        return isinstance(mode, str) and hasattr(self, f"_relevance_{mode}")

    def _relevance_identity(self, saved: Saved, top_relevance: list[np.ndarray]) -> list[np.ndarray]:
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
