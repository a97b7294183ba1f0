"""Forward → ranking → initial relevance → relevance per layer → raw heatmap, for a batch of input blobs."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .canonize import fold_batch_norm
from .composite import RelevanceSettings, assign_rules, bind_input_bounds, describe_rules
from .errors import RelevanceError
from .net import Net
from .rules import ZBox

TOP5 = -2


@dataclass(frozen=True)
class Explanation:
    """Results for a batch of N images.

    scores: N×numclasses values of the net's first output (probabilities for a Softmax net);
    ranking: N×numclasses class indices, best first; classes: the explained classes per image;
    rawhm: N×C×H×W relevance at the input with the channels reversed (R, G, B for a BGR net), as the original
    writes it; for formula 99 every channel holds the per-pixel L2 norm; problems: per image None, or why its
    results cannot be used (NaN or ±Inf arose in its scores or relevance, see :func:`non_finite_problems`).
    """

    scores: np.ndarray
    ranking: np.ndarray
    classes: list[list[int]]
    rawhm: np.ndarray
    problems: list[str | None] = field(default_factory=list)


def choose_classes(ranking: np.ndarray, target: int) -> list[int]:
    """−2: the top-5 (or fewer) classes; any other negative: the top-1; ≥ 0: that class."""
    if target == TOP5:
        return [int(c) for c in ranking[: min(5, len(ranking))]]
    if target < 0:
        return [int(ranking[0])]
    return [int(target)]


_BLAS_LOCK = threading.Lock()
_BLAS_CONTROLLER = None


def limit_blas(threads: int | None):
    """A context in which BLAS runs on ``threads`` threads (nothing when None); threadpoolctl's controller is
    built once per process."""
    global _BLAS_CONTROLLER
    if not threads:
        return contextlib.nullcontext()
    with _BLAS_LOCK:
        if _BLAS_CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=threads, user_api="blas")


class Explainer:
    """A net with the relevance settings of a config: the canonized net and its rules, computed and checked once,
    before any image (``settings``: :class:`~lrp_cli.composite.RelevanceSettings`; ``numclasses``: how many of the
    first output's values are class scores)."""

    def __init__(self, net: Net, settings: RelevanceSettings, numclasses: int):
        self.net = net
        self.settings = settings
        self.formula = settings.check()
        self.start = net.resolve_start(settings.last_layer_index)
        self.first = settings.first_layer_index
        net.check_range(self.start, self.first)
        self.numclasses = numclasses
        self.graph = fold_batch_norm(net, self.first, self.start)
        self.rules = assign_rules(self.graph, settings, self.start, self.first)

    @property
    def needs_input_bounds(self) -> bool:
        """True when some layer gets the z^B rule (formulas 6, 8, 18 on the first layer)."""
        return any(isinstance(rule, ZBox) for rule in self.rules)

    def describe_rules(self) -> str:
        """The rule of every layer from the start layer down (what ``lrp-demo --show-rules`` prints)."""
        return describe_rules(self.graph, self.rules, self.settings, self.start, self.first)

    def explain(
        self,
        images: np.ndarray,
        targets: list[int],
        input_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        on_layer=None,
        threads: int = 1,
    ) -> Explanation:
        """images: N×C×H×W float32 input blobs; targets: one per image; input_bounds: (low, high) arrays of
        the images' shape for the z^B rule (formulas 6, 8, 18); on_layer: see :meth:`Net.propagate`.

        ``threads`` > 1 explains contiguous slices of the batch concurrently, with BLAS on one thread each: it uses
        several cores for numpy's single-threaded work too. An image's result does not depend on its batch, so it
        does not depend on the slicing either.
        """
        count = max(1, min(int(threads), len(images)))
        if count == 1 or on_layer is not None:
            return self._explain(images, targets, input_bounds, on_layer)
        slices = [slice(int(a[0]), int(a[-1]) + 1) for a in np.array_split(np.arange(len(images)), count)]

        def part(s: slice) -> Explanation:
            bounds = None if input_bounds is None else (input_bounds[0][s], input_bounds[1][s])
            return self._explain(images[s], list(targets[s]), bounds, None)

        with limit_blas(1), ThreadPoolExecutor(count) as pool:
            parts = list(pool.map(part, slices))
        return Explanation(
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.ranking for p in parts]),
            [c for p in parts for c in p.classes],
            np.concatenate([p.rawhm for p in parts]),
            [problem for p in parts for problem in p.problems],
        )

    def _explain(self, images, targets, input_bounds, on_layer) -> Explanation:
        # NaN and ±Inf are found afterwards (non_finite_problems), per image: numpy's warnings about them would only
        # be noise, or, while another thread decodes an image under an "error" warning filter, an exception
        with np.errstate(all="ignore"):
            return self._explain_quietly(images, targets, input_bounds, on_layer)

    def _explain_quietly(self, images, targets, input_bounds, on_layer) -> Explanation:
        forward = self.graph.forward(images, self.rules, keep=self.graph.nodes[self.start].tops)
        output = forward.outputs[self.graph.output_names[0]]
        values = output.reshape(output.shape[0], -1)
        if self.numclasses > values.shape[1]:
            raise RelevanceError(
                f"numclasses {self.numclasses} exceeds the {values.shape[1]} outputs of blob "
                f"'{self.graph.output_names[0]}'", key="numclasses"
            )
        scores = values[:, : self.numclasses]
        ranking = np.argsort(-scores, axis=1, kind="stable")
        classes = [choose_classes(ranking[n], int(t)) for n, t in enumerate(targets)]
        seed = self.graph.initial_relevance(forward, self.start, classes)
        rules = self.rules if input_bounds is None else bind_input_bounds(self.rules, *input_bounds)
        relevance = self.graph.propagate(forward, rules, self.start, self.first, seed, on_layer, release=True)
        if relevance.ndim == 2:
            relevance = relevance[:, :, None, None]
        rawhm = relevance[:, ::-1]
        if self.formula.l2_norm:
            norm = np.sqrt((rawhm.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
            rawhm = np.broadcast_to(norm, rawhm.shape)
        rawhm = np.ascontiguousarray(rawhm, dtype=np.float64)
        return Explanation(scores, ranking, classes, rawhm, non_finite_problems(self.graph, images, scores, rawhm))


def non_finite_problems(net: Net, images: np.ndarray, scores: np.ndarray, rawhm: np.ndarray) -> list[str | None]:
    """Per image: None when its class scores (N×K) and relevance (N×…) are finite, else the message for it.

    A finite input can still overflow float32 inside the net (e.g. values of 3e38); the other images of the batch
    are unaffected (no layer mixes images). Checked once per image at the end; only for a failed image is the
    forward pass run again (keeping everything) to find the first layer that produced NaN or ±Inf.
    """
    finite = np.isfinite(scores).all(axis=1) & np.isfinite(rawhm.reshape(len(rawhm), -1)).all(axis=1)
    problems: list[str | None] = [None] * len(finite)
    for n in np.flatnonzero(~finite):
        forward = net.forward(images[n : n + 1])
        layer = next((node.name for node, saved in zip(net.nodes, forward.saved, strict=True)
                      if any(not np.isfinite(top).all() for top in saved.tops)), None)
        problems[n] = (f"the forward pass produced non-finite values (NaN/Inf) at layer '{layer}'" if layer else
                       "the relevance came out non-finite (NaN/Inf) although the forward pass was finite")
    return problems
