"""User-facing errors: each carries one clear line naming the file and the problem.

The hierarchy (all subclasses of :class:`LrpError`, which the command line reports as one line without a
traceback, and which the Python API raises as they are):

- :class:`ConfigError`: a config file, or a setting passed as a keyword to :func:`lrp_cli.load`;
- :class:`FileListError`: a file list (its line);
- :class:`ModelError`: a prototxt, caffemodel or mean file, or a net lrp_cli cannot run;
- :class:`ImageError`: an image or ``.npy`` input that cannot be read or preprocessed;
- :class:`RelevanceError`: a formula, rule or start/stop layer that cannot be applied to this net;
- :class:`OutputError` (:mod:`lrp_cli.outputs`): an output that cannot be named or written.
"""


class LrpError(Exception):
    """Base of every error the command line reports as one line, without a traceback."""


class ConfigError(LrpError):
    """A problem in the config file (names the file, line and key)."""


class FileListError(LrpError):
    """A problem in the file list (names the list and the line)."""


class ModelError(LrpError):
    """A problem in a prototxt, caffemodel or mean file, or an unsupported net."""


class ImageError(LrpError):
    """An image that cannot be read or preprocessed."""


class RelevanceError(LrpError):
    """A formula, rule or start layer that cannot be applied to this net.

    ``key``: the config key the problem is about (e.g. ``alphabeta_beta``), when there is one, so that a caller
    holding a config can name its line.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key
