"""The contract an optimizer keeps to take part in a benchmark, checkable on any class.

What the training loop and its checkpoints rely on, each check on a small GPT (`nano`) with
random gradients: a state_dict round trip continues bit for bit (through a deepcopy, pickle,
and `torch.save` + `torch.load(weights_only=True)`: plain tensors and numbers), parameters without a
gradient stay as they are, two builds step identically, a deepcopy or pickle steps like the
original, an added parameter group trains without changing the others, each group's lr counts,
an lr changed between steps counts, and float32 and float64 parameters step as each dtype alone.
Optimizers with evaluation weights of their own (`train()`/`eval()`, Schedule-Free) are switched
where the loop switches them: a checkpoint is taken in eval mode, and train() follows a load.

    python -m optimizers.contract package.module.Class [key=value ...]

builds `Class(param_groups, lr=1e-3, **kw)` (two groups: matrices, vectors), prints `ok  <check>`
or `FAIL <check>: why` per check, and exits 1 if any fails. `check(factory, name)` is the same
from Python, for any `factory(model) -> optimizer`.
"""

from __future__ import annotations

import ast
import copy
import importlib
import io
import pickle
import sys
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

Factory = Callable[[nn.Module], torch.optim.Optimizer]


class Broken(AssertionError):
    """A check's finding: one line saying what went wrong."""


def nano(seed: int = 0) -> nn.Module:
    """The nano GPT at SMALL_RUN's test size (2 layers of width 64): every kind of tensor of the
    full one (tied embedding and head, fused qkv, norms, biases) at a fraction of the cost."""
    import models

    torch.manual_seed(seed)
    return models.build_model("nano", n_layer=2, n_embd=64, block_size=32)


def set_random_grads(params, seed: int, skip=()) -> None:
    # Drawn in float32 whatever the parameter's dtype, so that models of different dtypes get
    # the same gradients.
    g = torch.Generator().manual_seed(seed)
    skipped = {id(p) for p in skip}
    for p in params:
        grad = (torch.randn(p.shape, generator=g) * 0.01).to(p.dtype)
        p.grad = None if id(p) in skipped else grad


def run_steps(model: nn.Module, opt, first: int, last: int, skip=()) -> None:
    for step in range(first, last):
        set_random_grads(model.parameters(), step, skip)
        opt.step()


def set_lr(opt, lr: float, groups=None) -> None:
    """As torch.optim.lr_scheduler sets it: a tensor lr is filled in place."""
    for group in opt.param_groups if groups is None else groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def set_mode(opt, mode: str) -> None:
    """opt.train() or opt.eval() where it has them (runners/train.py does the same)."""
    switch = getattr(opt, mode, None)
    if callable(switch):
        switch()


@contextmanager
def eval_weights(opt):
    set_mode(opt, "eval")
    try:
        yield
    finally:
        set_mode(opt, "train")


# ---------------------------------------------------------------- comparisons

def differences(a, b, where: str = "") -> list[str]:
    """Where two values (tensors, numbers, nested dicts and lists) differ, bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where or "a tensor"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where or 'the keys'}: {sorted(map(str, a))} vs {sorted(map(str, b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def _fail_if(found: list[str], what: str) -> None:
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise Broken(f"{what}: {', '.join(found[:3])}{more}")


def assert_same_params(a: nn.Module, b: nn.Module, what: str = "the parameters differ") -> None:
    _fail_if([name for (name, x), y in zip(a.state_dict().items(), b.state_dict().values())
              if not torch.equal(x, y)], what)


def assert_same_state(a, b, what: str = "the optimizer state differs") -> None:
    if len(a.state) != len(b.state):
        raise Broken(f"{what}: state for {len(a.state)} vs {len(b.state)} parameters")
    found = [f"parameter {i}{d}" for i, (x, y) in enumerate(zip(a.state.values(), b.state.values()))
             for d in differences(x, y)]
    found += [f"param_groups{d}" for d in differences(_hparams(a), _hparams(b))]
    _fail_if(found, what)


def _hparams(opt) -> list[dict]:
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


# ---------------------------------------------------------------- transports

def through_torch_save(state_dict: dict) -> dict:
    # weights_only=True: a state of plain tensors and numbers, which any loader can read safely
    # (the harness's own checkpoints are read with weights_only=False).
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


TRANSPORTS = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda state_dict: pickle.loads(pickle.dumps(state_dict)),
    "torch.save": through_torch_save,
}


# ---------------------------------------------------------------- the checks

def state_dict_round_trip(factory: Factory, transport=copy.deepcopy) -> None:
    """3 steps, save, 2 more; a fresh model and optimizer loaded from the save take the same 2
    steps to the same bits. The save is taken as the loop takes a checkpoint (eval mode, every
    RNG), and the load is followed by train(), as in the loop."""
    model = nano()
    opt = factory(model)
    run_steps(model, opt, 0, 3)
    with eval_weights(opt):
        saved_model = copy.deepcopy(model.state_dict())
        saved_opt = transport(opt.state_dict())
        rng = torch.get_rng_state()
    run_steps(model, opt, 3, 5)

    resumed = nano(seed=1)  # different initial weights: everything must come from the save
    resumed.load_state_dict(saved_model)
    resumed_opt = factory(resumed)
    resumed_opt.load_state_dict(saved_opt)
    set_mode(resumed_opt, "train")
    torch.set_rng_state(rng)
    run_steps(resumed, resumed_opt, 3, 5)
    assert_same_params(model, resumed, "resumed parameters differ from uninterrupted ones")
    assert_same_state(opt, resumed_opt, "resumed state differs from uninterrupted state")


def params_without_grad_are_skipped(factory: Factory) -> None:
    """A parameter whose grad is None (every third here, matrices and vectors) does not move."""
    model = nano()
    opt = factory(model)
    skip = list(model.parameters())[1::3]
    before = [p.detach().clone() for p in skip]
    run_steps(model, opt, 0, 3, skip=skip)
    names = {id(p): n for n, p in model.named_parameters()}
    _fail_if([names[id(p)] for p, b in zip(skip, before) if not torch.equal(p, b)],
             "parameters with grad None moved")


def deterministic(factory: Factory) -> None:
    """Two builds on the same weights, gradients and RNG state step to the same bits."""
    runs = []
    for _ in range(2):
        model = nano()
        opt = factory(model)
        torch.manual_seed(0)
        run_steps(model, opt, 0, 3)
        runs.append((model, opt))
    (a, a_opt), (b, b_opt) = runs
    assert_same_params(a, b, "two identical runs gave different parameters")
    assert_same_state(a_opt, b_opt, "two identical runs gave different state")


def copy_steps_like_the_original(factory: Factory, how: str) -> None:
    """Model and optimizer copied together (so that the copy steps the copied parameters), then
    both step on: the same parameters and state, and the original is untouched by the copy."""
    model = nano()
    opt = factory(model)
    run_steps(model, opt, 0, 2)
    pair = (model, opt)
    twin, twin_opt = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    assert_same_state(opt, twin_opt, f"a {how} has other state than the original")
    rng = torch.get_rng_state()
    run_steps(model, opt, 2, 5)
    torch.set_rng_state(rng)
    run_steps(twin, twin_opt, 2, 5)
    assert_same_params(model, twin, f"a {how} steps differently from the original")
    assert_same_state(opt, twin_opt, f"a {how} ends with other state than the original")


def add_param_group_then_step(factory: Factory) -> None:
    """A group of fresh parameters (a matrix and a vector) added after some steps: it trains,
    and the model's own parameters step as they do without it."""
    model, alone = nano(), nano()
    opt, alone_opt = factory(model), factory(alone)
    run_steps(model, opt, 0, 2)
    run_steps(alone, alone_opt, 0, 2)
    torch.manual_seed(2)
    extra = nn.Linear(8, 4)
    start = copy.deepcopy(extra.state_dict())
    opt.add_param_group({"params": list(extra.parameters()), "lr": 1e-2})
    for step in range(2, 5):
        set_random_grads(extra.parameters(), 100 + step)
        run_steps(model, opt, step, step + 1)
        run_steps(alone, alone_opt, step, step + 1)
    assert_same_params(model, alone, "an added group changed how the other parameters step")
    _fail_if([k for k, p in extra.state_dict().items()
              if not torch.isfinite(p).all() or torch.equal(p, start[k])],
             "parameters of an added group did not train")


def each_groups_lr_counts(factory: Factory) -> None:
    """With lr 0 in one parameter group, that group's parameters stay and the others' move;
    for each group in turn."""
    for frozen in range(len(factory(nano()).param_groups)):
        model = nano()
        opt = factory(model)
        set_lr(opt, 0.0, [opt.param_groups[frozen]])
        ids = {id(p) for p in opt.param_groups[frozen]["params"]}
        named = list(model.named_parameters())
        before = [p.detach().clone() for _, p in named]
        run_steps(model, opt, 0, 3)
        moved = {name for (name, p), b in zip(named, before) if not torch.equal(p, b)}
        _fail_if([name for name, p in named if id(p) in ids and name in moved],
                 f"group {frozen} has lr 0 but its parameters moved")
        others = [name for name, p in named if id(p) not in ids]
        if others and not moved.intersection(others):
            raise Broken(f"with lr 0 in group {frozen} alone, the other groups did not train")


def lr_change_counts(factory: Factory) -> None:
    """Two runs at the same lr for 2 steps, then one of them at 3x: the same bits after the
    first 2 steps, different ones after the changed steps."""
    runs = []
    for factor in (1.0, 3.0):
        model = nano()
        opt = factory(model)
        lrs = [float(g["lr"]) for g in opt.param_groups]
        run_steps(model, opt, 0, 2)
        runs.append(copy.deepcopy(model.state_dict()))
        for group, lr in zip(opt.param_groups, lrs):
            set_lr(opt, lr * factor, [group])
        run_steps(model, opt, 2, 4)
        runs.append(model)
    early_a, a, early_b, b = runs
    _fail_if([k for k in early_a if not torch.equal(early_a[k], early_b[k])],
             "two runs at the same lr differ")
    if all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())):
        raise Broken("an lr changed between steps had no effect (is it read once, at build?)")


def mixed_dtypes_step_as_each_dtype_alone(factory: Factory) -> None:
    """float32 and float64 parameters in one model (in every group of nanoGPT's split): each
    steps exactly as in a model all of its own dtype."""
    alone = {dtype: nano().to(dtype) for dtype in (torch.float32, torch.float64)}
    mixed = nano()
    for module in (mixed.wpe, mixed.h[0], mixed.ln_f):
        module.double()
    for model in (*alone.values(), mixed):
        run_steps(model, factory(model), 0, 3)
    _fail_if([k for k, p in mixed.state_dict().items()
              if not torch.equal(p, alone[p.dtype].state_dict()[k])],
             "parameters step differently beside parameters of another dtype")


CHECKS: dict[str, Callable[[Factory], None]] = {
    **{f"state_dict round trip ({name})": (lambda t: lambda f: state_dict_round_trip(f, t))(t)
       for name, t in TRANSPORTS.items()},
    "parameters without gradients skipped": params_without_grad_are_skipped,
    "deterministic": deterministic,
    "deepcopy steps like the original": lambda f: copy_steps_like_the_original(f, "deepcopy"),
    "pickle steps like the original": lambda f: copy_steps_like_the_original(f, "pickle"),
    "add_param_group then step": add_param_group_then_step,
    "each group's lr counts": each_groups_lr_counts,
    "an lr change takes effect": lr_change_counts,
    "mixed dtypes step as each dtype alone": mixed_dtypes_step_as_each_dtype_alone,
}


def results(factory: Factory) -> dict[str, str | None]:
    """check -> None when it holds, else one line saying why not."""
    found = {}
    for name, run in CHECKS.items():
        try:
            run(factory)
            found[name] = None
        except Exception as e:  # a crash is a finding too, said on one line
            why = str(e).strip().splitlines()[0] if str(e).strip() else ""
            found[name] = why if isinstance(e, Broken) else f"{type(e).__name__}: {why}"
    return found


def check(factory: Factory, name: str) -> list[str]:
    """The failures of the optimizer that `factory(model)` builds, one line each, naming it."""
    return [f"{name}: {check}: {why}" for check, why in results(factory).items() if why is not None]


# ---------------------------------------------------------------- command line

def matrices_and_vectors(model: nn.Module) -> list[dict]:
    """Two parameter groups, as nanoGPT splits a model (without setting any option)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2]}]


def class_factory(target: str, options: dict) -> Factory:
    module, _, attr = target.rpartition(".")
    if not module:
        raise ValueError(f"{target!r}: give the class as package.module.Class")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {target}: {e}") from None
    options = {"lr": 1e-3, **options}
    return lambda model: cls(matrices_and_vectors(model), **options)


def parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r}: options are key=value (e.g. lr=1e-3 betas=[0.9,0.95])")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a string: mode=fast


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[2].strip())
        return 0 if argv else 2
    try:
        factory = class_factory(argv[0], dict(map(parse_option, argv[1:])))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    found = results(factory)
    for name, why in found.items():
        print(f"ok   {name}" if why is None else f"FAIL {name}: {why}")
    failed = sum(why is not None for why in found.values())
    print(f"{argv[0]}: {len(found) - failed} of {len(found)} checks hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
