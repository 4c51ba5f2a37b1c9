"""Adam through torch's functional optimizer API, so that a fresh process never imports torch._dynamo.

Why not `torch.optim.Adam`: in recent torch every `torch.optim.Optimizer` imports `torch._dynamo` on first
use, compiled or not (`add_param_group`, called by `__init__`, and `zero_grad` are wrapped in
`torch._disable_dynamo`, which imports it lazily; `step` is wrapped in `_use_grad_for_differentiable`,
which does too). That import costs 1-2 s of CPU, more than the rest of a short run, and every scale-test
probe and search trial is a fresh process. The documented functional API `torch.optim.adam.adam` is the
same update (`torch.optim.Adam.step` calls it with these arguments) and reaches torch._dynamo only while
compiling, so this class gives the same parameters, bit for bit, without the import.

The state dict has `torch.optim.Adam`'s layout ({"state": {index: {"step", "exp_avg", "exp_avg_sq"}},
"param_groups": [...]}), so a checkpoint can be loaded by either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam


class Adam:
    """Adam (no weight decay, no amsgrad) over one group of parameters, with torch.optim.Adam's defaults."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("Adam got no parameters that require gradients")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    def _state(self, index: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Lazily created per-parameter state, as torch.optim.Adam._init_group creates it."""
        if index not in self.state:
            self.state[index] = {
                "step": torch.tensor(0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64
                                     else torch.float32),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return self.state[index]

    @torch.no_grad()
    def step(self) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients")
            state = self._state(index, p)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=None, capturable=False, differentiable=False,
             fused=None, grad_scale=None, found_inf=None, has_complex=any(torch.is_complex(p) for p in params),
             amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr, weight_decay=0.0, eps=self.eps,
             maximize=False)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: tensors and plain values only (safe for torch.load(weights_only=True))."""
        group = {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": 0.0, "amsgrad": False,
                 "maximize": False, "foreach": None, "capturable": False, "differentiable": False, "fused": None,
                 "decoupled_weight_decay": False, "params": list(range(len(self.params)))}
        return {"state": {index: dict(state) for index, state in self.state.items()}, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("the optimizer state does not match this model's parameters")
        group = groups[0]
        self.lr, self.betas, self.eps = group["lr"], tuple(group["betas"]), group["eps"]
        self.state = {}
        for key, saved in state_dict["state"].items():
            index = int(key)
            p = self.params[index]
            self.state[index] = {
                "step": saved["step"].detach().clone().to(torch.float32 if torch.get_default_dtype() != torch.float64
                                                          else torch.float64),
                "exp_avg": saved["exp_avg"].detach().to(p.device, p.dtype).clone(),
                "exp_avg_sq": saved["exp_avg_sq"].detach().to(p.device, p.dtype).clone(),
            }
