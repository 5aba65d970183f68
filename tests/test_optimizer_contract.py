"""The contract every registered optimizer keeps, whichever are registered when the suite runs:
exact predicted state memory, an exact state_dict round trip, clear errors for bad
hyper-parameters, a loss that goes down, a declared lr search range, and what PyTorch's own
test/test_optim.py asks of every torch.optim optimizer: a deepcopy or pickle steps like the
original, a state_dict survives pickling, torch.load(weights_only=True) and the numeric steps
older torch versions wrote, add_param_group works, mixed dtypes step as each dtype alone, and
lr may be a one-element tensor."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch

import models
import optimizers
from optimizers import registry
from optimizers.grouping import decay_groups

NAMES = optimizers.names()
BETA_OPTIONS = ("betas", "beta", "beta1", "beta2", "beta3", "momentum")


def hparams(name: str, total_steps: int) -> dict:
    """The budget options, filled in as a run fills them; the defaults supply the rest."""
    return {option: total_steps for option in optimizers.spec(name).budget_options}


def set_random_grads(model: torch.nn.Module, seed: int) -> None:
    # Drawn in float32 whatever the parameter's dtype, so that models of different dtypes get
    # the same gradients.
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=g) * 0.01).to(p.dtype)


def run_steps(model: torch.nn.Module, opt, first: int, last: int) -> None:
    for step in range(first, last):
        set_random_grads(model, step)
        opt.step()


def assert_same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    assert len(a.state) == len(b.state)
    for x, y in zip(a.state.values(), b.state.values()):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, y[key]), key
            else:
                assert value == y[key], key


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key


def nano(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model("nano")


def assert_error_names(excinfo, name: str, option: str) -> None:
    message = str(excinfo.value)
    assert name in message and option in message, message


# ---------------------------------------------------------------- state memory

@pytest.mark.parametrize("name", NAMES)
def test_predicted_state_bytes_on_nano(name):
    model = nano()
    opt = optimizers.build(name, model, **hparams(name, 10))
    set_random_grads(model, 0)
    opt.step()
    assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
        name, model, **hparams(name, 10))


@pytest.fixture(scope="module")
def gpt2_small():
    # 124M parameters; gradients are random (no forward pass: the state's size depends on shapes).
    model = models.build_model("gpt2_small")
    set_random_grads(model, 0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_predicted_state_bytes_on_gpt2_small(name, gpt2_small):
    opt = optimizers.build(name, gpt2_small, **hparams(name, 10))
    opt.step()
    assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
        name, gpt2_small, **hparams(name, 10))


# ---------------------------------------------------------------- state_dict round trip

def numeric_steps(state_dict: dict) -> dict:
    """The state_dict as older torch versions wrote it: every per-parameter step a number."""
    state_dict = copy.deepcopy(state_dict)
    for per_param in state_dict["state"].values():
        if isinstance(per_param.get("step"), torch.Tensor):
            per_param["step"] = per_param["step"].item()
    return state_dict


def through_torch_save(state_dict: dict) -> dict:
    # weights_only=True: the loader a checkpoint of plain tensors and numbers must get past.
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


TRANSPORTS = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda state_dict: pickle.loads(pickle.dumps(state_dict)),
    "torch.save": through_torch_save,
    "numeric steps": numeric_steps,
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_is_exact(name, transport):
    hp = hparams(name, 4)  # budget warmups end between the save and the last step
    model = nano()
    opt = optimizers.build(name, model, **hp)
    run_steps(model, opt, 0, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = TRANSPORTS[transport](opt.state_dict())
    run_steps(model, opt, 3, 5)

    resumed = nano(seed=1)  # different initial weights: everything must come from the save
    resumed.load_state_dict(saved_model)
    resumed_opt = optimizers.build(name, resumed, **hp)
    resumed_opt.load_state_dict(saved_opt)
    run_steps(resumed, resumed_opt, 3, 5)

    assert_same_params(model, resumed)
    assert_same_state(opt, resumed_opt)


# ---------------------------------------------------------------- copies, new groups, dtypes

@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", NAMES)
def test_a_copy_steps_like_the_original(name, how):
    """Model and optimizer copied together (so that the copy steps the copied parameters), then
    both step on: the same parameters and state, and the original is untouched by the copy."""
    model = nano()
    opt = optimizers.build(name, model, **hparams(name, 4))
    run_steps(model, opt, 0, 2)
    pair = (model, opt)
    twin, twin_opt = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    assert_same_state(opt, twin_opt)
    run_steps(model, opt, 2, 5)
    run_steps(twin, twin_opt, 2, 5)
    assert_same_params(model, twin)
    assert_same_state(opt, twin_opt)


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_then_step(name):
    """A group of fresh parameters (a matrix and a vector) added after some steps: it trains, and
    the model's own parameters step as they do without it."""
    model, alone = nano(), nano()
    opt = optimizers.build(name, model, **hparams(name, 4))
    alone_opt = optimizers.build(name, alone, **hparams(name, 4))
    run_steps(model, opt, 0, 2)
    run_steps(alone, alone_opt, 0, 2)
    torch.manual_seed(2)
    extra = torch.nn.Linear(8, 4)
    start = copy.deepcopy(extra.state_dict())
    opt.add_param_group({"params": list(extra.parameters()), "lr": 1e-2})
    for step in range(2, 5):
        set_random_grads(extra, step)
        run_steps(model, opt, step, step + 1)
        run_steps(alone, alone_opt, step, step + 1)
    assert_same_params(model, alone)
    for key, p in extra.state_dict().items():
        assert torch.isfinite(p).all() and not torch.equal(p, start[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes_step_as_each_dtype_alone(name):
    """float32 and float64 parameters in one model, and so in one param group: each steps exactly
    as in a model all of its own dtype."""
    alone = {dtype: nano().to(dtype) for dtype in (torch.float32, torch.float64)}
    mixed = nano()
    for module in (mixed.wpe, mixed.h[0], mixed.ln_f):
        module.double()
    for group in decay_groups(mixed, 0.1):  # matrices and vectors both come in both dtypes
        assert {p.dtype for p in group["params"]} == set(alone)
    for model in (*alone.values(), mixed):
        run_steps(model, optimizers.build(name, model, **hparams(name, 4)), 0, 3)
    for key, p in mixed.state_dict().items():
        assert torch.equal(p, alone[p.dtype].state_dict()[key]), key


# ---------------------------------------------------------------- lr as a tensor

def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """As torch.optim.lr_scheduler sets it: a tensor lr is filled in place."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


@pytest.mark.parametrize("shape", [(), (1,)])
@pytest.mark.parametrize("name", NAMES)
def test_lr_as_a_one_element_tensor(name, shape):
    """torch.optim takes lr as a one-element tensor; it is read at every step, so a scheduler's
    in-place update counts. The same trajectory as with a float lr (the tensor is float64, so
    that it holds the same numbers)."""
    hp = hparams(name, 4)
    model, twin = nano(), nano()
    opt = optimizers.build(name, model, lr=1e-3, **hp)
    twin_opt = optimizers.build(name, twin, lr=torch.full(shape, 1e-3, dtype=torch.float64), **hp)
    for step, lr in enumerate([1e-3, 1e-3, 3e-3, 3e-3]):
        for m, o in ((model, opt), (twin, twin_opt)):
            set_lr(o, lr)
            run_steps(m, o, step, step + 1)
    assert_same_params(model, twin)
    assert all(isinstance(group["lr"], torch.Tensor) for group in twin_opt.param_groups)


# ---------------------------------------------------------------- bad hyper-parameters

@pytest.mark.parametrize("name", NAMES)
def test_negative_lr_is_rejected(name):
    with pytest.raises(ValueError) as excinfo:
        optimizers.build(name, nano(), lr=-1e-3)
    assert_error_names(excinfo, name, "lr")


@pytest.mark.parametrize("name", NAMES)
def test_lr_tensor_of_several_elements_is_rejected(name):
    with pytest.raises(ValueError) as excinfo:
        optimizers.build(name, nano(), lr=torch.tensor([1e-3, 1e-3]))
    assert_error_names(excinfo, name, "lr")


@pytest.mark.parametrize("name", NAMES)
def test_beta_above_one_is_rejected(name):
    defaults = optimizers.spec(name).defaults
    options = [o for o in BETA_OPTIONS if o in defaults]
    if not options:
        pytest.skip(f"{name} has no beta-like option")
    for option in options:
        value = defaults[option]
        bad = (1.5, *value[1:]) if isinstance(value, (tuple, list)) else 1.5
        with pytest.raises(ValueError) as excinfo:
            optimizers.build(name, nano(), **{option: bad})
        assert_error_names(excinfo, name, option)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_rejected(name):
    with pytest.raises(ValueError) as excinfo:
        optimizers.build(name, nano(), learning_rate=1e-3)
    assert_error_names(excinfo, name, "learning_rate")


# ---------------------------------------------------------------- sanity

@pytest.mark.parametrize("name", NAMES)
def test_loss_goes_down_on_a_tiny_batch(name):
    steps = 10
    model = nano()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.config.vocab_size, (2, 17), generator=g)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    opt = optimizers.build(name, model, **hparams(name, steps))

    def loss_closure():
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        return loss

    first = opt.step(loss_closure).item()
    for _ in range(steps - 1):
        last = opt.step(loss_closure).item()
    # Defaults only; LAMB's trust ratio makes it the slowest here (about 5% in 10 steps).
    assert last < 0.97 * first, (first, last)


# ---------------------------------------------------------------- lr search range

@pytest.mark.parametrize("name", NAMES)
def test_lr_range_holds_the_default_lr(name):
    # LAMB's and SM3's default lr (AdamW's) sits at the bottom of their ranges: their useful lrs
    # are well above it (see their specs).
    spec = optimizers.spec(name)
    lo, hi = spec.lr_range
    assert 0 < lo <= spec.defaults["lr"] <= hi and lo < hi


def toy_spec(**fields) -> optimizers.OptimizerSpec:
    return optimizers.OptimizerSpec(
        name="toy_sgd", build=lambda model, lr: torch.optim.SGD(model.parameters(), lr=lr),
        predict_state_bytes=lambda model, **_: 0, defaults=dict(lr=1e-2), **fields)


def test_lr_range_defaults_to_a_decade_either_side_of_the_default_lr(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    assert optimizers.register(toy_spec()).lr_range == pytest.approx((1e-3, 1e-1))
    assert optimizers.spec("toy_sgd").lr_range == pytest.approx((1e-3, 1e-1))
    assert optimizers.register(toy_spec(lr_range=[1e-4, 1])).lr_range == (1e-4, 1.0)


@pytest.mark.parametrize("lr_range", [
    (0.0, 1e-2), (-1e-3, 1e-2), (1e-2, 1e-3), (1e-3, 1e-3), (1e-3, math.inf), (1e-3, math.nan),
    (1e-3,), (1e-4, 1e-3, 1e-2), "1e-4..1e-2", ("1e-4", "1e-2"),
])
def test_bad_lr_range_is_rejected(monkeypatch, lr_range):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    with pytest.raises(ValueError) as excinfo:
        optimizers.register(toy_spec(lr_range=lr_range))
    assert_error_names(excinfo, "toy_sgd", "lr_range")
    assert "toy_sgd" not in optimizers.names()
