"""Caffe file readers: deploy prototxt, caffemodel weights, mean images (numpy + protobuf, no Caffe)."""

from lrp_cli.caffe.caffemodel import read_caffemodel
from lrp_cli.caffe.mean import MeanImage, read_mean
from lrp_cli.caffe.model import InputDef, LayerDef, NetDef, load_model
from lrp_cli.caffe.prototxt import read_prototxt

__all__ = [
    "InputDef",
    "LayerDef",
    "MeanImage",
    "NetDef",
    "load_model",
    "read_caffemodel",
    "read_mean",
    "read_prototxt",
]
