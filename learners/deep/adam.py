"""Adam for the fine-tune rounds, the update `torch.optim.Adam` makes on CPU (single-tensor path).

Why not `torch.optim.Adam`: its first use imports `torch._dynamo` (about 2 s of CPU in this
environment), which the process that fine-tunes pays once: the replay (rounds run synchronously),
and the live worker when it fine-tunes in a thread (CUDA), with the stream's GIL held meanwhile.
`tests/deep/test_deep_adam.py` checks the steps against `torch.optim.Adam`.

>>> import torch
>>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
>>> opt = Adam([w], lr=0.1)
>>> (w ** 2).sum().backward()
>>> opt.step()
>>> [round(x, 4) for x in w.tolist()]  # a first Adam step: lr against each gradient's sign
[0.9, -1.9]
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    """Adam (Kingma & Ba, 2015) with L2 `weight_decay` added to the gradients, as `torch.optim.Adam`."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.steps = 0
        self._first = [torch.zeros_like(p) for p in self.params]
        self._second = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        step_size = self.lr / (1.0 - beta1 ** self.steps)
        correction2_sqrt = math.sqrt(1.0 - beta2 ** self.steps)
        for p, first, second in zip(self.params, self._first, self._second, strict=True):
            grad = p.grad
            if grad is None:
                continue
            if self.weight_decay:
                grad = grad.add(p, alpha=self.weight_decay)
            first.lerp_(grad, 1.0 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            denom = (second.sqrt() / correction2_sqrt).add_(self.eps)
            p.addcdiv_(first, denom, value=-step_size)
