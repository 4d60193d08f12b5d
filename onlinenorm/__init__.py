"""Online Normalization (Chiley et al., NeurIPS 2019) with its error compensation mechanisms.

The layers ``OnlineNorm1d`` / ``OnlineNorm2d``, their functional core
(``onlinenorm.functional``) and the clamp telemetry.

Names are resolved on first use, so the ``onlinenorm`` command (whose
``report`` and ``sweep status`` need no torch) starts without importing torch;
``import onlinenorm; onlinenorm.OnlineNorm2d`` works as usual.
"""

from __future__ import annotations

from onlinenorm.lazy import exports

_EXPORTS = {
    "ECMS": "onlinenorm.layers",
    "OnlineNorm1d": "onlinenorm.layers",
    "OnlineNorm2d": "onlinenorm.layers",
    "clamp_disabled": "onlinenorm.telemetry",
    "clamp_fractions": "onlinenorm.telemetry",
    "layer_scale": "onlinenorm.functional",
    "online_norm": "onlinenorm.functional",
    "reset_clamp_stats": "onlinenorm.telemetry",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = exports(__name__, _EXPORTS)
