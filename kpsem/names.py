"""Names and defaults the commands offer in ``--help``, importable without torch, matplotlib or pandas.

A command builds only its own options (:mod:`kpsem.cli`), and those options list their choices: the Grad-CAM
layers, the probes, the figure widths. Their owners compute them from what needs torch (the registered
model classes, the probe functions), so this module spells them out and ``tests/test_startup.py`` checks
each against its owner; plain constants (figure widths, formats, colour maps, fills) are defined here only
and their owners import them.
"""

from __future__ import annotations

__all__ = [
    "CAM_CMAPS",
    "CAM_LAYERS",
    "COLUMN_WIDTHS",
    "DEFAULT_CMAP",
    "DEFAULT_DIFFERENCE_CMAP",
    "DIFFERENCE_CMAPS",
    "FAITHFULNESS_FILLS",
    "FIGURE_FORMATS",
    "MODEL_NAMES",
    "PROBE_NAMES",
]

# kpsem.explain.gradcam.CAM_LAYERS: every registered model's Grad-CAM layers, in registry order
CAM_LAYERS = ("tail", "conv5", "conv4", "conv3", "conv2", "res5", "res4", "res3", "res2")
# kpsem.models.list_models(): the registered architectures
MODEL_NAMES = ("mf_kpsem", "mfnet", "r3d50", "r3d50_kpsem")
# kpsem.probes.PROBES: input probes, then KPSEM knock-outs, in the order tables list them
PROBE_NAMES = ("reverse", "shuffle", "freeze", "subsample", "mirror", "zero_temporal", "geometric_centres",
               "zero_spatial")

COLUMN_WIDTHS = {"single": 3.5, "double": 7.16}  # inches: a two-column paper's column and full width
FIGURE_FORMATS = ("png", "pdf", "svg")  # what every figure can be saved as
DEFAULT_CMAP = "viridis"  # Grad-CAM: perceptually uniform, readable in grey and under colour-vision deficiency
# Moreland's diverging coolwarm: a light middle for "no difference" and equally light ends.
DEFAULT_DIFFERENCE_CMAP = "coolwarm"
# Colour maps the app offers, the default first; jet stays for those who need to match old figures.
CAM_CMAPS = (DEFAULT_CMAP, "cividis", "inferno", "magma", "turbo", "jet")
DIFFERENCE_CMAPS = (DEFAULT_DIFFERENCE_CMAP, "RdBu_r", "PuOr_r")
FAITHFULNESS_FILLS = ("blur", "mean")  # what a removed Grad-CAM cell shows in the faithfulness curves
