"""The contract every registered optimizer keeps, whichever are registered when the suite runs:
exact predicted state memory, an exact state_dict round trip, clear errors for bad
hyper-parameters, and a loss that goes down."""

from __future__ import annotations

import copy

import pytest
import torch

import models
import optimizers

NAMES = optimizers.names()
BETA_OPTIONS = ("betas", "beta", "beta1", "beta2", "beta3", "momentum")


def hparams(name: str, total_steps: int) -> dict:
    """The budget options, filled in as a run fills them; the defaults supply the rest."""
    return {option: total_steps for option in optimizers.spec(name).budget_options}


def set_random_grads(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 0.01


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

@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_is_exact(name):
    hp = hparams(name, 4)  # budget warmups end between the save and the last step

    def steps(model, opt, first, last):
        for step in range(first, last):
            set_random_grads(model, step)
            opt.step()

    model = nano()
    opt = optimizers.build(name, model, **hp)
    steps(model, opt, 0, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    steps(model, opt, 3, 5)

    resumed = nano(seed=1)  # different initial weights: everything must come from the save
    resumed.load_state_dict(saved_model)
    resumed_opt = optimizers.build(name, resumed, **hp)
    resumed_opt.load_state_dict(saved_opt)
    steps(resumed, resumed_opt, 3, 5)

    for (key, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    for a, b in zip(opt.state.values(), resumed_opt.state.values()):
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[key]), key
            else:
                assert value == b[key], key


# ---------------------------------------------------------------- bad hyper-parameters

@pytest.mark.parametrize("name", NAMES)
def test_negative_lr_is_rejected(name):
    with pytest.raises(ValueError) as excinfo:
        optimizers.build(name, nano(), lr=-1e-3)
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
