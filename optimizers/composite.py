"""Several torch.optim optimizers over disjoint parameters, stepped as one optimizer.

How Muon is used (Muon on the hidden matrices, AdamW on the rest), with what the training loop
and checkpoints expect of one optimizer: `param_groups` (every part's groups, each tagged with
its part's name under "owner"), `state`, `step(closure)`, `zero_grad`, `add_param_group`, and a
state_dict in torch.optim's own layout (parameters numbered across the parts in order), so that
tools reading torch.optim state dicts read this one too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

OWNER = "owner"


class Composite:
    def __init__(self, parts: dict[str, torch.optim.Optimizer],
                 route: Callable[[torch.Tensor], str]):
        """`route(param)` names the part that takes a parameter of a group added later."""
        self.parts = parts
        self.route = route
        for name, opt in parts.items():
            for group in opt.param_groups:
                group[OWNER] = name

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.parts.values() for group in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self.parts.values() for p, s in opt.state.items()}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.parts.values():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        """A group with an "owner" goes to that part; otherwise each of its parameters goes
        where `route` sends it, with the group's options."""
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        owners = ([param_group[OWNER]] * len(params) if OWNER in param_group
                  else [self.route(p) for p in params])
        for name in dict.fromkeys(owners):
            if name not in self.parts:
                raise ValueError(f"no optimizer part {name!r}: the parts are {list(self.parts)}")
            mine = [p for p, owner in zip(params, owners) if owner == name]
            self.parts[name].add_param_group({**param_group, "params": mine, OWNER: name})

    def _sizes(self) -> list[int]:
        return [sum(len(g["params"]) for g in opt.param_groups) for opt in self.parts.values()]

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for opt, size in zip(self.parts.values(), self._sizes()):
            saved = opt.state_dict()
            state.update({offset + i: s for i, s in saved["state"].items()})
            groups += [{**g, "params": [offset + i for i in g["params"]]}
                       for g in saved["param_groups"]]
            offset += size
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        offset = 0
        for (name, opt), size in zip(self.parts.items(), self._sizes()):
            mine = range(offset, offset + size)
            opt.load_state_dict({
                "state": {i - offset: s for i, s in state_dict["state"].items() if i in mine},
                "param_groups": [{**g, "params": [i - offset for i in g["params"]]}
                                 for g in state_dict["param_groups"] if g.get(OWNER) == name],
            })
            offset += size
