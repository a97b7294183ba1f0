"""lrp_cli: Layer-wise Relevance Propagation heatmaps for Caffe image classifiers, on numpy."""

__version__ = "0.1.0"
