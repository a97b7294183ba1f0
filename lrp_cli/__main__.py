"""``python -m lrp_cli CONFIG FILELIST PREPENDPATH``: the same as ``lrp-demo``."""

from .cli import lrp_demo

lrp_demo(prog_name="lrp-demo")
