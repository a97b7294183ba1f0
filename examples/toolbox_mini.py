"""The LRP Toolbox manual's minimal example (python/mini.py), with lrp_cli's module paths.

    python examples/toolbox_mini.py MODEL.txt DIGITS.txt OUT.png

MODEL: a toolbox model of MNIST digits with 784 inputs (e.g. the toolbox's models/MNIST/long-rect.txt);
DIGITS: N x 784 pixel values 0..255 (.txt, .npy or .mat; e.g. the toolbox's data/MNIST/test_images.txt).
"""

import sys

# imports
import numpy as np

from lrp_cli.toolbox import data_io, model_io, render

na = np.newaxis
# end of imports

model_path, data_path, i_path = sys.argv[1:4]

# read model and first MNIST test image
nn = model_io.read(model_path)
X = data_io.read(data_path)[na, 0, :]
# normalized data to range [-1 1]
X = X / 127.5 - 1

# forward pass through network
Ypred = nn.forward(X)
# lrp to explain prediction of X
R = nn.lrp(Ypred)

# render rgb images and save as image
digit = render.digit_to_rgb(X)
# render heatmap R, use X as outline
hm = render.hm_to_rgb(R, X)
render.save_image([digit, hm], i_path)
