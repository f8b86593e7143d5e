"""RMSProp with Nesterov momentum (Goodfellow, Bengio & Courville, *Deep Learning*, Algorithm 8.6).

Neither torch (its ``RMSprop`` has classical momentum only) nor timm (``RMSpropTF``: classical momentum)
has it, so it is written here, in the style of torch's optimizers.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class RMSpropNesterov(Optimizer):
    """r ← ρr + (1−ρ)g⊙g, v ← αv − ε·g/(√r + δ), θ ← θ + v, with g the gradient at the look-ahead θ + αv.

    As torch's Nesterov SGD does, the parameters hold the look-ahead point φ = θ + αv, so the ordinary
    backward pass gives the gradient the algorithm needs; the update is then φ ← φ − αv_old + (1+α)v_new.
    Names follow torch's ``RMSprop``: ``lr`` = ε, ``alpha`` = ρ, ``momentum`` = α, ``eps`` = δ;
    ``weight_decay`` adds λφ to the gradient (L2).
    """

    def __init__(self, params, lr=1e-3, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=0.0):
        for key, value, ok in (
            ("lr", lr, lr >= 0),
            ("alpha", alpha, 0 <= alpha < 1),
            ("eps", eps, eps > 0),
            ("momentum", momentum, 0 <= momentum < 1),
            ("weight_decay", weight_decay, weight_decay >= 0),
        ):
            if not ok:
                raise ValueError(f"RMSpropNesterov: invalid {key}={value!r}")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["alpha"], group["eps"]
            mom, wd = group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    state["velocity"] = torch.zeros_like(p)
                r, v = state["square_avg"], state["velocity"]
                r.mul_(rho).addcmul_(grad, grad, value=1 - rho)
                p.add_(v, alpha=-mom)  # back from the look-ahead point to θ
                v.mul_(mom).addcdiv_(grad, r.sqrt().add_(eps), value=-lr)
                p.add_(v, alpha=1 + mom)  # θ + v, then look ahead by αv
        return loss
