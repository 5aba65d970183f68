"""The learning-rate law of a ladder: lr = A * N^a * D^b, fitted per optimizer over its tuned rungs.

A suite that tunes only some of its models (`tune.models: [...]`) gives the others, for an
optimizer whose lr is `tuned`, the lr of this law at their own N (parameters, GPT.num_params())
and D (the main run's tokens). The law is fitted by least squares in log space,
ln lr = ln A + a ln N + b ln D, over the tuned rungs (each a model at its main run's budget).

In a ladder D = tokens_per_param_max x N at every rung, so ln D = ln N + const: N^a D^b is then
c N^(a+b) and a and b cannot be told apart. Whenever ln D is an affine function of ln N over the
tuned rungs, to within AFFINE_TOLERANCE (the ladder's case, or one budget for every model), the
law is fitted in N alone,
lr = A * N^a, and D enters through A; it is fitted in N and D only when the rungs vary the two
independently (three rungs at least). Two rungs give an exact fit, with no residual to judge it by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FILE = "lr_law.json"  # results/<suite>/lr_law.json: the fits and the lrs they gave (runners.suite.declare)
# ln D within this of an affine function of ln N counts as one: a ladder's budgets, rounded to whole
# steps, sit off tokens_per_param x N by under a step (1.9% for 0.5 tokens per parameter of 25,056
# parameters in steps of 512 tokens), and a full fit through such points has wild exponents.
AFFINE_TOLERANCE = 0.05


@dataclass
class Law:
    optimizer: str
    log_a: float  # ln A
    exponents: dict[str, float]  # {"N": a} or {"N": a, "D": b}
    points: list[dict]  # the tuned rungs: model, params, tokens, lr, fitted, residual (ln lr - ln fitted)

    @property
    def form(self) -> str:
        return "A * N^a" if "D" not in self.exponents else "A * N^a * D^b"

    def lr(self, params: float, tokens: float) -> float:
        return math.exp(self.log_a + self.exponents["N"] * math.log(params)
                        + self.exponents.get("D", 0.0) * math.log(tokens))

    def as_dict(self) -> dict:
        res = [p["residual"] for p in self.points]
        return {"form": self.form, "A": math.exp(self.log_a), "exponents": self.exponents,
                "rungs": len(self.points), "rms_residual": float(np.sqrt(np.mean(np.square(res)))),
                "points": self.points}


class LawError(ValueError):
    """Too few tuned rungs to fit a law; the message says what to tune."""


def fit(optimizer: str, points: list[dict]) -> Law:
    """The law through `points` ({model, params, tokens, lr} of each tuned rung)."""
    log_n = np.log([p["params"] for p in points])
    log_d = np.log([p["tokens"] for p in points])
    y = np.log([p["lr"] for p in points])
    if len(set(log_n.round(9))) < 2:
        raise LawError(f"{optimizer}: tuned lrs at {len(set(log_n.round(9)))} model size(s); the lr law needs "
                       "two sizes or more")
    by_n_only = np.column_stack([np.ones_like(log_n), log_n])
    # ln D affine in ln N (a ladder): only N's exponent is defined
    off = log_d - by_n_only @ np.linalg.lstsq(by_n_only, log_d, rcond=None)[0]
    by_n = len(points) < 3 or float(np.abs(off).max()) < AFFINE_TOLERANCE
    x = by_n_only if by_n else np.column_stack([by_n_only, log_d])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    fitted = x @ coef
    exps = {"N": float(coef[1])} | ({} if by_n else {"D": float(coef[2])})
    rows = [{**{k: p[k] for k in ("model", "params", "tokens", "lr")}, "fitted": float(math.exp(f)),
             "residual": float(v - f)} for p, v, f in zip(points, y, fitted)]
    return Law(optimizer, float(coef[0]), exps, rows)
