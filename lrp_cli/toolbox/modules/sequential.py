"""A chain of modules: the network (toolbox python/modules/sequential.py)."""

from __future__ import annotations

import copy
import sys
import time

import numpy as np

from ..errors import ShapeError
from .module import Module


def random_batch(n: int, size: int) -> np.ndarray:
    """``size`` distinct indices from [0, n), sorted, drawn as the original does (uniform integers from numpy's
    global random state, repeated and de-duplicated until there are enough), so a seed gives its batches."""
    if size > n:
        raise ShapeError(f"train: batchsize {size} is larger than the {n} training samples")
    picked = np.arange(0)
    while picked.size < size:
        picked = np.unique(np.append(picked, np.random.randint(0, n, [size - picked.size])))
    return picked


class Sequential(Module):
    """Sequential(modules): forward in order, backward and lrp in reverse. Keeps the given list object."""

    _PICKLED = ("lrp_var", "lrp_param", "modules")

    def __init__(self, modules):
        super().__init__()
        self.modules = modules

    def __init_state__(self):
        super().__init_state__()
        self.modules = []

    def forward(self, X, lrp_aware=False):
        """The output of the last module for the batch X (which each module stores for lrp/backward)."""
        for module in self.modules:
            X = module.forward(X, lrp_aware=lrp_aware)
        return X

    def backward(self, DY):
        """The gradient at the input for the gradient DY at the output."""
        for module in self.modules[::-1]:
            DY = module.backward(DY)
        return DY

    def update(self, lrate):
        for module in self.modules:
            module.update(lrate)

    def clean(self):
        """Forget every module's forward/backward state."""
        for module in self.modules:
            module.clean()

    def set_lrp_parameters(self, lrp_var=None, param=None):
        """The same preset on every module (per-layer mixes: call it on single modules afterwards)."""
        for module in self.modules:
            module.set_lrp_parameters(lrp_var=lrp_var, param=param)

    def lrp(self, R, lrp_var=None, param=None):
        """Relevance at the input for R (shaped like the last forward output), through the modules in reverse.

        Every module gets the same (lrp_var, param): explicit arguments override all presets; with neither,
        each module uses its own preset (see :meth:`Module.lrp`).
        """
        for module in self.modules[::-1]:
            R = module.lrp(R, lrp_var, param)
        return R

    def drop_softmax_output_layer(self) -> bool:
        """Remove the last module if it is a SoftMax; True if one was removed."""
        from .elementwise import SoftMax

        if self.modules and isinstance(self.modules[-1], SoftMax):
            del self.modules[-1]
            return True
        return False

    def train(self, X, Y, Xval=(), Yval=(), batchsize=25, iters=10000, lrate=0.005, lrate_decay=None,
              lfactor_initial=1.0, status=250, convergence=-1, transform=None, silent=False):
        """Mini-batch training with the signal Ypred − Y (Y one-hot N×C), the manual's defaults.

        Each iteration: a random batch (:func:`random_batch`), forward, backward(Ypred − Ybatch),
        update(lrate · factor). Every ``status`` iterations it evaluates on (Xval, Yval), or on the training
        data when no validation set is given: accuracy and l1-loss Σ|Ypred − Y| / N; a loss ≤ the best so far keeps
        a copy of the modules (and with lrate_decay 'sublinear'/'linear' sets factor 1 − acc² / 1 − acc), else
        after ``convergence`` (> 0) evaluations without improvement training stops. At the end the modules are
        the best copy. Unlike the original, the last iteration is always evaluated, so training shorter than
        ``status`` iterations is not thrown away.
        """
        X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
        has_validation = len(Xval) != 0 and len(Yval) != 0
        state = {"factor": lfactor_initial, "countdown": convergence, "best_loss": np.inf, "best_acc": 0.0,
                 "best_iter": 0, "best": copy.deepcopy(self.modules), "start": time.time()}
        for d in range(iters):
            samples = random_batch(X.shape[0], batchsize)
            batch = X[samples, :] if transform is None else transform(X[samples, :])
            predicted = self.forward(batch)
            self.backward(predicted - Y[samples, :])
            self.update(lrate * state["factor"])
            if (d + 1) % status == 0 or d + 1 == iters:
                if not self._evaluate(d, iters, X, Y, Xval, Yval, has_validation, lrate, lrate_decay, convergence,
                                      silent, state):
                    break
            elif (d + 1) % (status / 10) == 0 and not silent:
                loss = np.abs(predicted - Y[samples, :]).sum() / predicted.shape[0]
                sys.stdout.write(f"batch# {d + 1}, lrate {lrate * state['factor']}, l1-loss {loss:.4}\n")
        if not silent:
            print(f"Setting network parameters to best encountered network state with {state['best_acc'] * 100}% "
                  f"accuracy and a loss of {state['best_loss']} from iteration {state['best_iter']}.")
        self.modules = state["best"]

    def _evaluate(self, d, iters, X, Y, Xval, Yval, has_validation, lrate, lrate_decay, convergence, silent, state):
        """One status evaluation of :meth:`train`; False when training has converged."""
        Xe, Ye = (np.asarray(Xval, np.float64), np.asarray(Yval, np.float64)) if has_validation else (X, Y)
        predicted = self.forward(Xe)
        acc = np.mean(np.argmax(predicted, axis=1) == np.argmax(Ye, axis=1))
        loss = np.abs(predicted - Ye).sum() / Ye.shape[0]
        where = "validation set" if has_validation else "training data"
        if not silent:
            print(f"Accuracy after {d + 1} iterations on {where}: {acc * 100}% (l1-loss: {loss:.4})")
        if loss <= state["best_loss"]:
            state.update(best_acc=acc, best_loss=loss, best_iter=d, best=copy.deepcopy(self.modules),
                         countdown=convergence)
            if lrate_decay == "sublinear":
                state["factor"] = 1.0 - acc * acc
            elif lrate_decay == "linear":
                state["factor"] = 1.0 - acc
        else:
            state["countdown"] -= 1
            if state["countdown"] == 0 and convergence > 0:
                if not silent:
                    print(f"    No more recorded model improvements for {convergence} evaluations. "
                          "Accepting model convergence.")
                return False
        if not silent:
            elapsed = time.time() - state["start"]
            remaining = elapsed / ((d + 1) / iters) - elapsed
            done = (d + 1) / iters * 100
            print(f"    Estimate time until current training ends : {remaining:.0f}s ({done:.2f}% done)")
        return True
