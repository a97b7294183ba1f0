"""Errors of the toolbox API: each is an :class:`lrp_cli.errors.LrpError` with a one-line message.

They also derive from the built-in type a caller of the original toolbox would catch (ValueError, OSError,
TypeError, NotImplementedError, ImportError), so ``except ValueError`` keeps working.
"""

from lrp_cli.errors import LrpError


class ToolboxError(LrpError):
    """Base of the toolbox's errors."""


class ModelFileError(ToolboxError, ValueError):
    """A model file that cannot be read or written (names the file, the line and the problem)."""


class PickleRefusedError(ModelFileError):
    """A pickled model read without ``allow_pickle=True``, or a pickle naming a class outside the toolbox."""


class DataFileError(ToolboxError, ValueError):
    """A data file that cannot be read or written."""


class ToolboxFileNotFoundError(ToolboxError, FileNotFoundError):
    """A model or data file that does not exist."""


class MissingExtraError(ToolboxError, ImportError):
    """An optional dependency (an extra of the package) is not installed."""


class LrpVariantError(ToolboxError, ValueError):
    """An unknown LRP variant name or a variant without its required parameter."""


class MissingLrpMethodError(ToolboxError, NotImplementedError):
    """A layer that does not implement the requested LRP variant (e.g. MaxPool's 'epsilon_slow')."""


class ShapeError(ToolboxError, ValueError):
    """An input or relevance whose shape does not fit the layer, or a call in the wrong order."""


class RenderError(ToolboxError, ValueError):
    """Arguments that cannot be rendered (unknown colour map, incompatible shapes)."""
