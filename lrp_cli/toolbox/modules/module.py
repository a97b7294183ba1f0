"""The base class of the toolbox's layers and the LRP variant dispatch (toolbox python/modules/module.py)."""

from __future__ import annotations

import numpy as np

from ..errors import LrpVariantError, MissingLrpMethodError, ShapeError

#: lrp_var names (lower-cased) → the method implementing them; 'eps' is the manual's alias of 'epsilon'
VARIANTS = {
    "none": "_simple_lrp",
    "simple": "_simple_lrp",
    "slow": "_simple_lrp_slow",
    "simple_slow": "_simple_lrp_slow",
    "flat": "_flat_lrp",
    "ww": "_ww_lrp",
    "w^2": "_ww_lrp",
    "epsilon": "_epsilon_lrp",
    "eps": "_epsilon_lrp",
    "epsilon_slow": "_epsilon_lrp_slow",
    "alphabeta": "_alphabeta_lrp",
    "alpha": "_alphabeta_lrp",
    "alphabeta_slow": "_alphabeta_lrp_slow",
    "alpha_slow": "_alphabeta_lrp_slow",
}
#: the methods that take the parameter (ε or α)
PARAMETRISED = {"_epsilon_lrp", "_epsilon_lrp_slow", "_alphabeta_lrp", "_alphabeta_lrp_slow"}

#: attributes that hold forward/backward state, never the model: left out of pickles and copies of the model
TRANSIENT = ("X", "Y", "Z", "DY", "dW", "dB", "lrp_aware")


def stabilizer_sign(v: np.ndarray) -> np.ndarray:
    """s(v): +1 where v ≥ 0, −1 elsewhere (the toolbox's stabiliser sign; unlike np.sign, s(0) = +1)."""
    return np.where(v >= 0, 1.0, -1.0)


def as_float64(x, layer: str) -> np.ndarray:
    """The input as a float64 array (the toolbox computes everything in float64)."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ShapeError(f"{layer}: input is not a numeric array ({err})") from None


class Module:
    """A layer: forward, backward, update, clean, and LRP by variant name.

    Every module starts with the presets lrp_var = None (the simple rule) and lrp_param = 1.
    """

    def __init__(self):
        self.lrp_var = None
        self.lrp_param = 1.0

    # ---- training interface (identity / no-op defaults) ----
    def forward(self, X, lrp_aware=False):
        """Y = X."""
        return X

    def backward(self, DY):
        """dE/dX = DY."""
        return DY

    def update(self, lrate):
        """Apply the gradients of the last backward (layers with parameters only)."""

    def clean(self):
        """Forget the state of the last forward/backward (inputs, outputs, gradients)."""
        for name in TRANSIENT:
            if name in self.__dict__:
                setattr(self, name, None)

    def train(self, X, Y, *args, **kwargs):
        """Only :class:`Sequential` trains."""

    # ---- LRP ----
    def set_lrp_parameters(self, lrp_var=None, param=None):
        """Preset the variant and parameter used when :meth:`lrp` gets neither."""
        self.lrp_var = lrp_var
        self.lrp_param = param

    def lrp(self, R, lrp_var=None, param=None):
        """Relevance at this layer's input for the relevance R at its output (after a forward of the same batch).

        lrp_var (case-insensitive): None/'none'/'simple', 'slow'/'simple_slow', 'flat', 'ww'/'w^2',
        'epsilon'/'eps' (param = ε), 'epsilon_slow', 'alphabeta'/'alpha' (param = α, β = 1 − α),
        'alphabeta_slow'/'alpha_slow'. The presets of :meth:`set_lrp_parameters` apply only when both
        lrp_var and param are None.
        """
        if lrp_var is None and param is None:
            lrp_var, param = self.lrp_var, self.lrp_param
        method = self._lrp_method(lrp_var)
        if method in PARAMETRISED:
            if param is None:
                raise LrpVariantError(f"lrp variant {lrp_var!r} needs a parameter (param=...)")
            return getattr(self, method)(R, param)
        return getattr(self, method)(R)

    def _lrp_method(self, lrp_var) -> str:
        key = "none" if lrp_var is None else str(lrp_var).lower()
        if key not in VARIANTS:
            known = ", ".join(sorted(VARIANTS))
            raise LrpVariantError(f"{type(self).__name__}: unknown lrp variant {lrp_var!r} (known: {known})")
        return VARIANTS[key]

    def _require_forward(self, *names):
        """Raise ShapeError unless a forward has stored the named attributes (lrp/backward need them)."""
        if any(getattr(self, name, None) is None for name in names):
            raise ShapeError(f"{type(self).__name__}: call forward before lrp/backward (no stored forward state)")

    def _missing(self, method):
        raise MissingLrpMethodError(f"{method} missing in {type(self).__name__}")

    def _simple_lrp(self, R):
        self._missing("_simple_lrp")

    def _simple_lrp_slow(self, R):
        self._missing("_simple_lrp_slow")

    def _flat_lrp(self, R):
        self._missing("_flat_lrp")

    def _ww_lrp(self, R):
        self._missing("_ww_lrp")

    def _epsilon_lrp(self, R, epsilon):
        self._missing("_epsilon_lrp")

    def _epsilon_lrp_slow(self, R, epsilon):
        self._missing("_epsilon_lrp_slow")

    def _alphabeta_lrp(self, R, alpha):
        self._missing("_alphabeta_lrp")

    def _alphabeta_lrp_slow(self, R, alpha):
        self._missing("_alphabeta_lrp_slow")

    # ---- pickling: the model, never the forward state ----
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in TRANSIENT}

    def __setstate__(self, state):
        self.__init_state__()
        for key, value in state.items():
            if key in self._PICKLED:
                setattr(self, key, value)

    def __init_state__(self):
        """Defaults for an object made by unpickling (no __init__ ran)."""
        self.lrp_var = None
        self.lrp_param = 1.0

    #: attributes taken from a pickle (the original's names); everything else in it is ignored
    _PICKLED = ("lrp_var", "lrp_param")


def check_relevance(R, expected_shape, layer: str) -> np.ndarray:
    """R as float64 with the shape of the last forward output, else ShapeError."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != tuple(expected_shape):
        raise ShapeError(f"{layer}: relevance has shape {R.shape}, the last forward output {tuple(expected_shape)}")
    return R
