"""The contract every registered optimizer keeps, whichever are registered when the suite runs:
the checks any optimizer can be put through (optimizers/contract.py: an exact state_dict round
trip, parameters without gradients skipped, determinism, copies, added groups, per-group lrs, lr
changes, mixed dtypes), and what a registered one promises beyond them: exact predicted state
memory, a state_dict with the numeric steps older torch versions wrote, lr as a one-element
tensor, clear errors for bad hyper-parameters, a loss that goes down at its defaults, and a
declared lr search range."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import models
import optimizers
from optimizers import contract, registry
from optimizers.contract import assert_same_params, nano, run_steps, set_lr, set_random_grads

NAMES = optimizers.names()
BETA_OPTIONS = ("betas", "beta", "beta1", "beta2", "beta3", "momentum")


def hparams(name: str, total_steps: int) -> dict:
    """The budget options, filled in as a run fills them; the defaults supply the rest."""
    return {option: total_steps for option in optimizers.spec(name).budget_options}


def registered(name: str, **overrides):
    """The contract's factory for a registered optimizer. Budget warmups last 4 steps: they end
    between a check's save (after step 3) and its last step."""
    return lambda model: optimizers.build(name, model, **{**hparams(name, 4), **overrides})


def nano_preset() -> torch.nn.Module:
    """The `nano` preset itself (the contract's checks use a smaller one): what a registered
    optimizer's defaults and state predictions are held to."""
    torch.manual_seed(0)
    return models.build_model("nano")


def assert_error_names(excinfo, name: str, option: str) -> None:
    message = str(excinfo.value)
    assert name in message and option in message, message


# ---------------------------------------------------------------- the shared contract

@pytest.mark.parametrize("check", contract.CHECKS)
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, check):
    contract.CHECKS[check](registered(name))


def numeric_steps(state_dict: dict) -> dict:
    """The state_dict as older torch versions wrote it: every per-parameter step a number."""
    state_dict = copy.deepcopy(state_dict)
    for per_param in state_dict["state"].values():
        if isinstance(per_param.get("step"), torch.Tensor):
            per_param["step"] = per_param["step"].item()
    return state_dict


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_with_numeric_steps_resumes_exactly(name):
    contract.state_dict_round_trip(registered(name), numeric_steps)


# ---------------------------------------------------------------- state memory

@pytest.mark.parametrize("name", NAMES)
def test_predicted_state_bytes_on_nano(name):
    model = nano_preset()
    opt = optimizers.build(name, model, **hparams(name, 10))
    set_random_grads(model.parameters(), 0)
    opt.step()
    assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
        name, model, **hparams(name, 10))


@pytest.fixture(scope="module")
def gpt2_small():
    # 124M parameters; gradients are random (no forward pass: the state's size depends on shapes).
    model = models.build_model("gpt2_small")
    set_random_grads(model.parameters(), 0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_predicted_state_bytes_on_gpt2_small(name, gpt2_small):
    if name == "soap":  # tests/test_extra_optimizers.py covers its dims past max_precondition_dim
        pytest.skip("SOAP's first step (eigh of 3072 x 3072 statistics) takes minutes on a CPU")
    opt = optimizers.build(name, gpt2_small, **hparams(name, 10))
    opt.step()
    assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
        name, gpt2_small, **hparams(name, 10))


# ---------------------------------------------------------------- lr as a tensor

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
    model = nano_preset()
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
