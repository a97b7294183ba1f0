"""The Caffe forks' depthwise convolution layers: ``ConvolutionDepthwise`` and ``DepthwiseConvolution``."""

from __future__ import annotations

from .convolution import Convolution


class DepthwiseConvolution(Convolution):
    """A Convolution with one group per input channel (weight M×1×kh×kw; ShuffleNet's ``ConvolutionDepthwise``
    gives no ``group`` and has as many outputs as inputs, MobileNet v3's ``DepthwiseConvolution`` gives it).
    Forward, relevance and gradient are the Convolution's, on its depthwise path (see
    :func:`lrp_cli.layers.windows.depthwise_correlate`).

    :func:`lrp_cli.caffe.model.build_net_def` turns these layers into plain ``Convolution`` layers with ``group``
    set to the input's channel count (the net chooses linear rules and folds BatchNorm by type name), so a net
    never builds this class; it serves callers that build a layer from a prototxt entry directly, where the
    input's channels are unknown and a missing ``group`` is taken as the number of outputs.
    """

    type = "ConvolutionDepthwise"
    types = ("ConvolutionDepthwise", "DepthwiseConvolution")

    def __init__(self, name, param, blobs):
        if not param.convolution_param.HasField("group"):
            filled = type(param)()
            filled.CopyFrom(param)
            filled.convolution_param.group = filled.convolution_param.num_output
            param = filled
        super().__init__(name, param, blobs)
