"""Online Normalization (Chiley et al., NeurIPS 2019) with its error compensation mechanisms.

The layers ``OnlineNorm1d`` / ``OnlineNorm2d``, their functional core
(``onlinenorm.functional``) and the clamp telemetry.
"""

from onlinenorm.functional import layer_scale, online_norm
from onlinenorm.layers import ECMS, OnlineNorm1d, OnlineNorm2d
from onlinenorm.telemetry import clamp_disabled, clamp_fractions, reset_clamp_stats

__all__ = [
    "ECMS",
    "OnlineNorm1d",
    "OnlineNorm2d",
    "clamp_disabled",
    "clamp_fractions",
    "layer_scale",
    "online_norm",
    "reset_clamp_stats",
]
