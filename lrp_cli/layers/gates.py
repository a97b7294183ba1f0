"""Multiplicative gates y = x ⊙ g (Eltwise PROD, Scale with a second bottom, the a·x of Axpy): relevance rules.

The usual LRP treatment of a gate (as in LRP for LSTMs, Arras et al. 2017): the gate g only modulates the signal
x, so it is held constant; x ↦ g ⊙ x is then a one-input linear neuron per element, and relevance through it goes
entirely to the signal, R_x = R_y, and none to the gate, R_g = 0. The layers know which bottom is the signal from
the bottom order (Eltwise PROD: the first bottom, every other one a gate; Scale: bottom 0 the signal, bottom 1
the factor; Axpy: bottom 1 the signal, bottom 0 the gate).

By rule (:mod:`lrp_cli.rules`; :func:`lrp_cli.composite.rule_of` chooses):
- Pass (the LRP formulas): R_x = R_y, R_g = 0;
- Transposed (deconvnet, guided backprop: the backward step of a linear map): R_x = g ⊙ R_y, R_g = 0;
- Gradient (formulas 11 and 99): the exact derivative, R_x = g ⊙ R_y and R_g = Σ x ⊙ R_y over the axes g
  is broadcast along (the product rule).
"""

from __future__ import annotations

import numpy as np


def sum_to_shape(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` summed over the axes along which an array of ``shape`` was broadcast to ``values.shape``
    (``shape`` padded with leading ones), reshaped to ``shape``."""
    padded = (1,) * (values.ndim - len(shape)) + tuple(shape)
    axes = tuple(i for i, (v, s) in enumerate(zip(values.shape, padded, strict=True)) if s == 1 and v != 1)
    total = values.sum(axis=axes, keepdims=True, dtype=np.float64) if axes else values
    return total.reshape(shape).astype(values.dtype, copy=False)
