"""User-facing errors: each carries one clear line naming the file and the problem."""


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
    """A formula, rule or start layer that cannot be applied to this net."""
