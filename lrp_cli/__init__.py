"""lrp_cli: Layer-wise Relevance Propagation heatmaps for Caffe image classifiers, on numpy.

    import lrp_cli
    model = lrp_cli.load("configs/config_sequential.txt")     # or lrp_cli.load_caffe(prototxt, caffemodel, ...)
    result = model.explain("someimages/cat1.jpg")             # a path, PIL image, uint8 array, or a list of them
    result.top5, result.rawhm, result.heatmap(), result.to_pil(overlay=True), result.save("out")

Errors are :class:`LrpError` subclasses with one line naming the file and the problem (see :mod:`lrp_cli.errors`).
"""

from .api import Explanation, Model, Settings, load, load_caffe
from .errors import ConfigError, FileListError, ImageError, LrpError, ModelError, RelevanceError
from .outputs import OutputError

__version__ = "0.2.0"

__all__ = [
    "ConfigError", "Explanation", "FileListError", "ImageError", "LrpError", "Model", "ModelError", "OutputError",
    "RelevanceError", "Settings", "load", "load_caffe",
]  # fmt: skip
