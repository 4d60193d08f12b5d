"""Online Normalization (Chiley et al., NeurIPS 2019) with its error compensation mechanisms.

The layers ``OnlineNorm1d`` / ``OnlineNorm2d``, their functional core
(``onlinenorm.functional``) and the clamp telemetry.

Names are resolved on first use, so the ``onlinenorm`` command (whose
``report`` and ``sweep status`` need no torch) starts without importing torch;
``import onlinenorm; onlinenorm.OnlineNorm2d`` works as usual.
"""

from __future__ import annotations

from onlinenorm.lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "onlinenorm.layers": ["ECMS", "OnlineNorm1d", "OnlineNorm2d"],
        "onlinenorm.functional": ["layer_scale", "online_norm"],
        "onlinenorm.telemetry": ["clamp_disabled", "clamp_fractions", "reset_clamp_stats"],
    },
)
