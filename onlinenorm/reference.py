"""Independent per-sample reference (oracle) of Online Normalization, from the equations of
:mod:`onlinenorm.functional`'s docstring.

A plain loop over samples in float64, sharing no code with the layer's kernels.
It is what the tests check every kernel choice against and the slow baseline of
``onlinenorm bench layer``; never an implementation to train with.
"""

from __future__ import annotations

import torch


class OracleOnlineNorm:
    """One Online Normalization layer, evaluated sample by sample in float64.

    ``x`` is ``(N, C, *spatial)``; the state ``mu, var, u, v`` is ``(C,)``.
    The affine and the ECM after the normalizer are differentiated by
    autograd (they are ordinary functions); the normalizer's input gradient
    is the control process, evaluated by the loop in ``backward``.
    """

    def __init__(
        self,
        num_features,
        alpha_fwd,
        alpha_bkw,
        eps=1e-5,
        ecm="none",
        clamp_value=5.0,
        ls_eps=1e-5,
        weight=None,
        bias=None,
    ):
        f64 = dict(dtype=torch.float64)
        self.mu, self.var = torch.zeros(num_features, **f64), torch.ones(num_features, **f64)
        self.u, self.v = torch.zeros(num_features, **f64), torch.zeros(num_features, **f64)
        self.alpha_fwd, self.alpha_bkw, self.eps = alpha_fwd, alpha_bkw, eps
        self.ecm, self.clamp_value, self.ls_eps = ecm, clamp_value, ls_eps
        self.weight = None if weight is None else weight.detach().double()
        self.bias = None if bias is None else bias.detach().double()

    def normalize(self, x):
        """Forward normalizer over one batch; advances ``mu``, ``var``.

        Returns ``y`` shaped like ``x`` and the per-sample ``var_{t-1}`` as ``(N, C)``.
        """
        a = self.alpha_fwd
        x = x.double().reshape(x.shape[0], x.shape[1], -1)
        ys, var_prev = [], []
        for x_t in x:  # x_t: (C, positions)
            m_t = x_t.mean(dim=1)
            s2_t = ((x_t - m_t[:, None]) ** 2).mean(dim=1)
            ys.append((x_t - self.mu[:, None]) / torch.sqrt(self.var[:, None] + self.eps))
            var_prev.append(self.var.clone())
            self.var = a * self.var + (1 - a) * s2_t + a * (1 - a) * (m_t - self.mu) ** 2
            self.mu = a * self.mu + (1 - a) * m_t
        return torch.stack(ys), torch.stack(var_prev)

    def control(self, g, y, var_prev):
        """Backward control process over one batch; advances ``u``, ``v``.

        ``g`` and ``y`` are ``(N, C, positions)``; returns the input gradient.
        """
        leak = 1 - self.alpha_bkw
        dxs = []
        for g_t, y_t, var_t in zip(g, y, var_prev, strict=False):
            g_tilde = g_t - leak * self.v[:, None] * y_t
            self.v = self.v + (g_tilde * y_t).mean(dim=1)
            h_t = g_tilde / torch.sqrt(var_t[:, None] + self.eps)
            dx_t = h_t - leak * self.u[:, None]
            self.u = self.u + dx_t.mean(dim=1)
            dxs.append(dx_t)
        return torch.stack(dxs)

    def head(self, y, shape, unclamped=False):
        """Affine then ECM, as differentiable float64 ops on ``y`` ``(N, C, positions)``."""
        z = y
        if self.weight is not None:
            z = z * self.weight[:, None] + self.bias[:, None]
        if self.ecm == "ac" and not unclamped:
            z = torch.clamp(z, -self.clamp_value, self.clamp_value)
        if self.ecm == "ls":
            z = z / torch.sqrt((z**2).mean(dim=(1, 2), keepdim=True) + self.ls_eps)
        return z.reshape(shape)

    def step(self, x, grad_out):
        """Forward and backward of one training batch.

        Returns ``(output, grad_input, grad_weight, grad_bias, pre_clamp)``.
        """
        y, var_prev = self.normalize(x)
        y = y.requires_grad_()
        params = [p.requires_grad_() for p in (self.weight, self.bias) if p is not None]
        out = self.head(y, x.shape)
        grads = torch.autograd.grad(out, [y] + params, grad_out.double())
        pre_clamp = self.head(y, x.shape, unclamped=True).detach()
        for p in params:
            p.requires_grad_(False)
        dx = self.control(grads[0], y.detach(), var_prev).reshape(x.shape)
        gw, gb = (grads[1], grads[2]) if params else (None, None)
        return out.detach(), dx, gw, gb, pre_clamp

    def evaluate(self, x):
        """Eval mode: normalize with the current state, change nothing."""
        x3 = x.double().reshape(x.shape[0], x.shape[1], -1)
        y = (x3 - self.mu[:, None]) / torch.sqrt(self.var[:, None] + self.eps)
        return self.head(y, x.shape)
