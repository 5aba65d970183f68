"""Adafactor, CAME and SM3 against their PyPI references, plus state size, state_dict and checks.

Parity runs on a small GPT-2 in float64 for 20 steps, every parameter getting a gradient every
step (the references count steps per group, ours per parameter). Every reference argument is
pinned: the packages' defaults differ from ours and from each other.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import optimizers
from models import GPT, GPTConfig
from optimizers import factored, sm3
from optimizers.adafactor import Adafactor
from optimizers.came import CAME
from optimizers.grouping import decay_groups
from optimizers.sm3 import SM3

STEPS = 20
# No biases: the key bias gets a gradient of pure rounding noise (softmax ignores a constant
# added to every score), which any adaptive optimizer amplifies into differences of order one.
CFG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)


def tiny_gpt(dtype=torch.float64) -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).to(dtype)


def batches(n=STEPS, batch=4):
    g = torch.Generator().manual_seed(1)
    # (inputs, targets) of full length, so every row of wpe gets a gradient each step
    return [torch.randint(0, CFG.vocab_size, (2, batch, CFG.block_size), generator=g)
            for _ in range(n)]


def loss_of(model, tokens):
    # in the model's dtype: GPT.forward takes the loss in float32, which would cap parity at ~1e-7
    inputs, targets = tokens
    logits, _ = model(inputs)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def train(model, opt, data):
    for tokens in data:
        opt.zero_grad(set_to_none=True)
        loss_of(model, tokens).backward()
        opt.step()


def assert_parity(make_ours, make_ref, dtype=torch.float64):
    """Same model, same batches: both optimizers must land on the same parameters (rtol 1e-6),
    after moving them far more than that tolerance."""
    ours, ref = tiny_gpt(dtype), tiny_gpt(dtype)
    start = copy.deepcopy(ours.state_dict())
    data = batches()
    train(ours, make_ours(ours), data)
    train(ref, make_ref(ref), data)
    moved = max((p - start[n]).abs().max().item() for n, p in ours.named_parameters())
    assert moved > 1e-3
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12, msg=lambda m: f"{name}: {m}")


def decay_split(model, weight_decay):
    return [dict(g) for g in decay_groups(model, weight_decay)]


# ---------------------------------------------------------------- parity


def test_came_matches_came_pytorch():
    from came_pytorch import CAME as RefCAME

    # lr 1e-3: at 2e-3 this toy run is chaotic (a 1e-15 nudge grows to 2e-4 in 20 steps, with
    # came-pytorch against itself), which no parity tolerance survives
    hp = dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), eps=(1e-30, 1e-16), clip_threshold=1.0)
    assert_parity(
        lambda m: optimizers.build("came", m, weight_decay=0.1, **hp),
        # came-pytorch decays every parameter it is given: hand it our two groups
        lambda m: RefCAME(decay_split(m, 0.1), weight_decay=0.0, **hp),
    )


def test_sm3_matches_pytorch_optimizer():
    from pytorch_optimizer import SM3 as RefSM3

    assert_parity(
        lambda m: optimizers.build("sm3", m, lr=1e-2, momentum=0.9, eps=1e-30),
        lambda m: RefSM3(m.parameters(), lr=1e-2, momentum=0.9, beta=0.0, eps=1e-30,
                         maximize=False, foreach=False),
    )


def test_sm3_without_momentum_matches_pytorch_optimizer():
    from pytorch_optimizer import SM3 as RefSM3

    assert_parity(
        lambda m: optimizers.build("sm3", m, lr=1e-2, momentum=0.0, eps=1e-30),
        lambda m: RefSM3(m.parameters(), lr=1e-2, momentum=0.0, beta=0.0, eps=1e-30,
                         maximize=False, foreach=False),
    )


def test_adafactor_external_lr_momentum_matches_pytorch_optimizer():
    from pytorch_optimizer import AdaFactor

    assert_parity(
        lambda m: optimizers.build("adafactor", m, lr=3e-3, beta1=0.9, weight_decay=0.1),
        lambda m: AdaFactor(
            decay_split(m, 0.1), lr=3e-3, betas=(0.9, 1 - 1e-12), decay_rate=-0.8,
            weight_decouple=True, fixed_decay=False, clip_threshold=1.0, ams_bound=False,
            scale_parameter=False, relative_step=False, warmup_init=False, eps1=1e-30, eps2=1e-3,
            momentum_dtype=torch.float64, foreach=False, maximize=False,
        ),
    )


def test_adafactor_relative_step_matches_torch():
    assert_parity(
        lambda m: optimizers.build("adafactor", m, lr=1e-2, beta1=None, weight_decay=0.0,
                                   relative_step=True, scale_parameter=True),
        # eps1=None is torch's machine-epsilon clamp; ours adds 1e-30 to g² like HF: no
        # difference at these gradient sizes
        lambda m: torch.optim.Adafactor(m.parameters(), lr=1e-2, beta2_decay=-0.8,
                                        eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                                        foreach=False, maximize=False),
    )


@pytest.mark.parametrize("name", ["adafactor", "came"])
def test_buckets_do_not_change_the_result(name, monkeypatch):
    """A step cut into many small buckets equals the one-bucket step."""
    one = tiny_gpt()
    many = copy.deepcopy(one)
    data = batches(3)
    train(one, optimizers.build(name, one, lr=1e-2), data)
    monkeypatch.setattr(factored, "BUCKET_NUMEL", 2000)
    assert len(list(factored.buckets(list(many.parameters())))) > 3
    train(many, optimizers.build(name, many, lr=1e-2), data)
    for a, b in zip(one.parameters(), many.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("budget", [40, 1000])
def test_sm3_pieces_do_not_change_the_result(budget, monkeypatch):
    """Stepped a row (40) or a few rows of several tensors (1000) at a time, as on the CPU,
    SM3 lands where it does with every tensor whole in one batch, as on a GPU."""
    whole = tiny_gpt()
    pieces = copy.deepcopy(whole)
    data = batches(3)
    monkeypatch.setattr(sm3, "CPU_PIECE_NUMEL", 1 << 24)
    train(whole, optimizers.build("sm3", whole, lr=1e-2), data)
    monkeypatch.setattr(sm3, "CPU_PIECE_NUMEL", budget)
    train(pieces, optimizers.build("sm3", pieces, lr=1e-2), data)
    for a, b in zip(whole.parameters(), pieces.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("budget", [7, 1 << 19])
def test_sm3_on_tensors_of_every_rank_matches_pytorch_optimizer(budget, monkeypatch):
    from pytorch_optimizer import SM3 as RefSM3

    monkeypatch.setattr(sm3, "CPU_PIECE_NUMEL", budget)
    shapes = [(4, 5, 6), (9, 7), (2, 3, 4, 5), (11,), ()]
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    ref = [torch.nn.Parameter(t.clone()) for t in start]
    opts = [SM3(ours, lr=0.1, momentum=0.9, eps=1e-30),
            RefSM3(ref, lr=0.1, momentum=0.9, beta=0.0, eps=1e-30, foreach=False)]
    for _ in range(STEPS):
        grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        for params, opt in zip((ours, ref), opts):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            opt.step()
    for a, b, s in zip(ours, ref, start):
        assert (a - s).abs().max() > 1e-3
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


# ---------------------------------------------------------------- state


SETTINGS = [
    ("adafactor", {}),
    ("adafactor", dict(beta1=None, relative_step=True, scale_parameter=True)),
    ("came", {}),
    ("sm3", {}),
    ("sm3", dict(momentum=0.0)),
]


@pytest.mark.parametrize("name,hp", SETTINGS)
def test_predicted_state_bytes_are_exact(name, hp):
    model = tiny_gpt(torch.float32)
    opt = optimizers.build(name, model, **hp)
    train(model, opt, batches(1))
    assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(name, model, **hp)
    for state in opt.state.values():
        for key, value in state.items():
            assert value.dtype == torch.float32, key


def test_factored_state_is_small():
    """m + n per matrix: CAME keeps the momentum plus a sliver, momentum-free SM3 a sliver."""
    model = tiny_gpt(torch.float32)
    n = sum(p.numel() for p in model.parameters()) * 4
    assert optimizers.predict_state_bytes("came", model) < 1.2 * n
    assert optimizers.predict_state_bytes("sm3", model, momentum=0.0) < 0.2 * n
    assert optimizers.predict_state_bytes("adafactor", model, beta1=None) < 0.2 * n


@pytest.mark.parametrize("name,hp", SETTINGS)
def test_state_dict_round_trip(name, hp):
    """k steps, save, load into a fresh optimizer, go on: identical to never stopping."""
    data = batches(6)
    straight = tiny_gpt()
    train(straight, optimizers.build(name, straight, lr=1e-2, **hp), data)

    resumed = tiny_gpt()
    first = optimizers.build(name, resumed, lr=1e-2, **hp)
    train(resumed, first, data[:3])
    saved = copy.deepcopy(first.state_dict())
    second = optimizers.build(name, resumed, lr=1e-2, **hp)
    second.load_state_dict(saved)
    train(resumed, second, data[3:])
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_step_takes_a_closure_and_skips_params_without_grad():
    model = tiny_gpt()
    opt = Adafactor(model.parameters(), lr=1e-2)
    tokens = batches(1)[0]
    frozen = model.wpe.weight

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, tokens)
        loss.backward()
        frozen.grad = None
        return loss

    before = frozen.detach().clone()
    assert torch.isfinite(opt.step(closure))
    assert frozen not in opt.state and torch.equal(frozen, before)


def test_weight_decay_only_on_matrices():
    """Zero gradients: only decay moves θ, and only on tensors with dim >= 2, by lr·λ."""
    for name in ["adafactor", "came"]:
        model = tiny_gpt()
        before = copy.deepcopy(model.state_dict())
        opt = optimizers.build(name, model, lr=0.01, weight_decay=0.5)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for n, p in model.named_parameters():
            factor = 1 - 0.01 * 0.5 if p.dim() >= 2 else 1.0
            torch.testing.assert_close(p, before[n] * factor, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- hyper-parameter checks


@pytest.mark.parametrize("name,hp,param", [
    ("adafactor", dict(lr=-1.0), "lr"),
    ("adafactor", dict(beta1=1.0), "beta1"),
    ("adafactor", dict(decay_rate=0.5), "decay_rate"),
    ("adafactor", dict(eps=(1e-30, -1.0)), "eps"),
    ("adafactor", dict(clip_threshold=0.0), "clip_threshold"),
    ("adafactor", dict(weight_decay=-0.1), "weight_decay"),
    ("adafactor", dict(relative_step="yes"), "relative_step"),
    ("adafactor", dict(eps=1e-30), "eps"),
    ("came", dict(betas=(0.9, 0.999, 1.5)), "betas[2]"),
    ("came", dict(betas=(0.9, 0.999)), "betas"),
    ("came", dict(eps=(1e-30,)), "eps"),
    ("came", dict(clip_threshold=float("nan")), "clip_threshold"),
    ("sm3", dict(momentum=1.0), "momentum"),
    ("sm3", dict(eps=-1e-30), "eps"),
    ("sm3", dict(weight_decay=0.1), "weight_decay"),
])
def test_bad_hparams_name_the_optimizer_and_parameter(name, hp, param):
    with pytest.raises(ValueError) as err:
        optimizers.build(name, tiny_gpt(torch.float32), **hp)
    assert repr(name) in str(err.value) and param in str(err.value)


def test_malformed_tuples_are_value_errors():
    params = list(tiny_gpt(torch.float32).parameters())
    with pytest.raises(ValueError, match="'came'.*betas"):
        CAME(params, betas=0.9)
    with pytest.raises(ValueError, match="'adafactor'.*eps"):
        Adafactor(params, eps=(1e-30, 1e-3, 0.0))


def test_defaults_list_every_option():
    for name, cls in [("adafactor", Adafactor), ("came", CAME), ("sm3", SM3)]:
        spec = optimizers.spec(name)
        assert spec.defaults["lr"] == 1e-3
        opt = spec.build(tiny_gpt(torch.float32), **spec.defaults)
        assert isinstance(opt, cls)
        assert set(opt.defaults) == set(spec.defaults)
