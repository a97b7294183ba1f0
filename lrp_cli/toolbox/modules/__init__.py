"""The toolbox's layers: ``from lrp_cli.toolbox import modules; modules.Sequential([...])``."""

from .convolution import Convolution
from .elementwise import Flatten, Rect, SoftMax, Tanh
from .linear import Linear
from .module import Module
from .pooling import MaxPool, SumPool
from .sequential import Sequential

__all__ = ["Module", "Sequential", "Linear", "Convolution", "SumPool", "MaxPool", "Flatten", "Rect", "Tanh", "SoftMax"]
