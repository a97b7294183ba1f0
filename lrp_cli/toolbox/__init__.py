"""The LRP Toolbox's stand-alone Python API on current numpy (see README.md beside this file).

``from lrp_cli.toolbox import model_io, data_io, render, modules`` gives the original's four modules.
"""
