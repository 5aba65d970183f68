"""LAMB and AdEMAMix against their references, in fp64.

Each is checked twice: against pytorch-optimizer 4.1.0 (a PyPI package) and against the reference
algorithm written out below tensor by tensor, from its equations: cybertronai's LAMB
(pytorch-lamb `lamb.py`, HEAD d3ab8dc) and Apple's AdEMAMix (ml-ademamix `pytorch/ademamix.py`,
HEAD c3d73c0).
"""

from __future__ import annotations

import math

import pytest
import pytorch_optimizer as po
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import optimizers
import optimizers.chunking
from optimizers.ademamix import AdEMAMix, beta3_at
from optimizers.lamb import Lamb

STEPS = 30


def toy_tensors() -> list[torch.Tensor]:
    """Two matrices (the larger has |theta| ~ 35, beyond LAMB's cap of 10), a zero-initialised
    vector (LAMB's |theta| = 0 guard) and a random vector."""
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    return [torch.randn(8, 6, generator=g, dtype=f64), torch.randn(40, 30, generator=g, dtype=f64),
            torch.zeros(6, dtype=f64), torch.randn(6, generator=g, dtype=f64)]


def toy_grads(step: int, like: list[torch.Tensor]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in like]


WEIGHT_DECAY = [0.1, 0.1, 0.0, 0.0]  # nanoGPT's rule: matrices decay, vectors do not


def run_optimizer(make, steps: int = STEPS) -> list[torch.Tensor]:
    params = [nn.Parameter(t) for t in toy_tensors()]
    opt = make([{"params": params[:2], "weight_decay": WEIGHT_DECAY[0]},
                {"params": params[2:], "weight_decay": WEIGHT_DECAY[2]}])
    for step in range(steps):
        for p, g in zip(params, toy_grads(step, params)):
            p.grad = g
        opt.step()
    return [p.detach() for p in params]


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# ---------------------------------------------------------------- written-out references

def lamb_reference(lr, betas, eps, steps=STEPS) -> list[torch.Tensor]:
    """cybertronai LAMB, one tensor at a time: no bias correction, decay inside the trust ratio,
    |theta| capped at 10, ratio 1 when either norm is zero."""
    beta1, beta2 = betas
    out = []
    for i, theta in enumerate(toy_tensors()):
        m, v = torch.zeros_like(theta), torch.zeros_like(theta)
        for step in range(steps):
            g = toy_grads(step, toy_tensors())[i]
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            u = m / (v.sqrt() + eps) + WEIGHT_DECAY[i] * theta
            w_norm = min(theta.norm().item(), 10.0)
            u_norm = u.norm().item()
            ratio = 1.0 if w_norm == 0 or u_norm == 0 else w_norm / u_norm
            theta = theta - lr * ratio * u
        out.append(theta)
    return out


def ademamix_reference(lr, betas, alpha, warmup, eps, steps=STEPS) -> list[torch.Tensor]:
    """Apple's AdEMAMix, one tensor at a time, with both schedulers over `warmup` steps."""
    beta1, beta2, beta3 = betas

    def half_life(beta):  # including Apple's +1e-8
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    out = []
    for i, theta in enumerate(toy_tensors()):
        m1, m2, v = (torch.zeros_like(theta) for _ in range(3))
        for t in range(1, steps + 1):
            g = toy_grads(t - 1, toy_tensors())[i]
            if t < warmup:
                a = t / warmup
                alpha_t = a * alpha
                beta3_t = 0.5 ** (1 / ((1 - a) * half_life(beta1) + a * half_life(beta3) + 1))
            else:
                alpha_t, beta3_t = alpha, beta3
            m1 = beta1 * m1 + (1 - beta1) * g if beta1 else g
            m2 = beta3_t * m2 + (1 - beta3_t) * g
            v = beta2 * v + (1 - beta2) * g * g
            denom = v.sqrt() / math.sqrt(1 - beta2**t) + eps
            u = (m1 / (1 - beta1**t) + alpha_t * m2) / denom + WEIGHT_DECAY[i] * theta
            theta = theta - lr * u
        out.append(theta)
    return out


# ---------------------------------------------------------------- LAMB

def test_lamb_matches_pytorch_optimizer_exactly_with_eps_zero():
    # po adds eps to |u| in the trust ratio and we do not: with eps = 0 nothing else differs.
    ours = run_optimizer(lambda g: Lamb(g, lr=1e-2, betas=(0.9, 0.999), eps=0.0))
    ref = run_optimizer(lambda g: po.Lamb(
        g, lr=1e-2, betas=(0.9, 0.999), eps=0.0, weight_decouple=False, adam_debias=True,
        fixed_decay=False, rectify=False, grad_averaging=True, adam=False, pre_norm=False,
        foreach=False))
    assert max_abs_diff(ours, ref) < 1e-12


def test_lamb_eps_residue_against_pytorch_optimizer_is_the_documented_one():
    # With eps = 1e-6 po's ratio is |theta| / (|u| + eps): a relative 1e-6/|u| per step, |u| >= ~2.
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-6)
    ours = run_optimizer(lambda g: Lamb(g, **kw))
    ref = run_optimizer(lambda g: po.Lamb(g, **kw, weight_decouple=False, adam_debias=True,
                                          foreach=False))
    residue = max_abs_diff(ours, ref)
    assert 1e-9 < residue < 1e-6


@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_lamb_matches_written_out_cybertronai(eps):
    ours = run_optimizer(lambda g: Lamb(g, lr=1e-2, betas=(0.9, 0.999), eps=eps))
    assert max_abs_diff(ours, lamb_reference(1e-2, (0.9, 0.999), eps)) < 1e-12


def test_lamb_step_size_is_lr_times_capped_weight_norm():
    # First step of a large tensor: u is m / sqrt(v) = sign(g) (eps 0, no decay), tau = 10 / |u|.
    theta = nn.Parameter(torch.full((100, 100), 1.0, dtype=torch.float64))
    theta.grad = torch.randn(100, 100, dtype=torch.float64)
    before = theta.detach().clone()
    Lamb([theta], lr=1e-2, eps=0.0).step()
    moved = torch.linalg.norm(theta.detach() - before).item()
    assert moved == pytest.approx(1e-2 * 10.0, rel=1e-12)


# ---------------------------------------------------------------- AdEMAMix

@pytest.mark.parametrize("beta1", [0.9, 0.0])
def test_ademamix_matches_written_out_apple(beta1):
    betas, warmup = (beta1, 0.999, 0.9999), 20  # the warmups end inside the 30 steps
    ours = run_optimizer(lambda g: AdEMAMix(g, lr=1e-2, betas=betas, alpha=8.0, alpha_warmup=warmup,
                                            beta3_warmup=warmup, eps=1e-8))
    ref = ademamix_reference(1e-2, betas, 8.0, warmup, 1e-8)
    assert max_abs_diff(ours, ref) < 1e-12


def test_ademamix_matches_pytorch_optimizer_without_schedulers():
    kw = dict(lr=1e-2, betas=(0.9, 0.999, 0.9999), alpha=8.0, eps=1e-8)
    ours = run_optimizer(lambda g: AdEMAMix(g, **kw))
    ref = run_optimizer(lambda g: po.AdEMAMix(g, **kw, t_alpha_beta3=None, weight_decouple=True,
                                              fixed_decay=False, foreach=False))
    assert max_abs_diff(ours, ref) < 1e-12


def test_ademamix_scheduler_residue_against_pytorch_optimizer_is_the_documented_one():
    # po's closed-form beta3 schedule drops Apple's +1e-8 inside the log (optimizers.md §2.6):
    # the schedules differ by < 3e-7 and the parameters by about 2e-6 after 30 steps.
    b1, b3, T = 0.9, 0.9999, 30
    sched = max(abs(beta3_at(t, b1, b3, T) - po.AdEMAMix.schedule_beta3(T, t, b1, b3))
                for t in range(1, T + 1))
    assert 1e-9 < sched < 3e-7
    kw = dict(lr=1e-2, betas=(b1, 0.999, b3), alpha=8.0, eps=1e-8)
    ours = run_optimizer(lambda g: AdEMAMix(g, **kw, alpha_warmup=T, beta3_warmup=T))
    ref = run_optimizer(lambda g: po.AdEMAMix(g, **kw, t_alpha_beta3=T, weight_decouple=True,
                                              foreach=False))
    residue = max_abs_diff(ours, ref)
    assert 1e-8 < residue < 5e-6


def test_ademamix_beta1_zero_keeps_no_fast_ema():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = optimizers.build("ademamix", model, betas=(0.0, 0.999, 0.9999))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert all("exp_avg_fast" not in s for s in opt.state.values())
    assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
        "ademamix", model, betas=(0.0, 0.999, 0.9999))


def test_ademamix_warmups_are_budget_options_off_by_default():
    spec = optimizers.spec("ademamix")
    assert spec.budget_options == ("alpha_warmup", "beta3_warmup")
    assert spec.defaults["alpha_warmup"] is None and spec.defaults["beta3_warmup"] is None


@pytest.mark.parametrize("option", ["alpha_warmup", "beta3_warmup"])
@pytest.mark.parametrize("value", [0, -5, 2.5, True])
def test_ademamix_rejects_bad_warmups(option, value):
    with pytest.raises(ValueError, match=f"ademamix.*{option}"):
        optimizers.build("ademamix", nn.Linear(2, 2), **{option: value})


@pytest.mark.parametrize("name, betas", [("lamb", (0.9, 0.99, 0.9)), ("ademamix", (0.9, 0.99))])
def test_wrong_number_of_betas_is_rejected(name, betas):
    with pytest.raises(ValueError, match=f"{name}.*betas"):
        optimizers.build(name, nn.Linear(2, 2), betas=betas)


# ---------------------------------------------------------------- chunks and DTensor shards

MAKERS = {
    "lamb": lambda g: Lamb(g, lr=1e-2, eps=1e-6),
    "ademamix": lambda g: AdEMAMix(g, lr=1e-2, alpha_warmup=20, beta3_warmup=20),
}


@pytest.mark.parametrize("name", MAKERS)
def test_cutting_the_step_into_chunks_changes_nothing(name, monkeypatch):
    whole = run_optimizer(MAKERS[name])
    monkeypatch.setattr(optimizers.chunking, "CPU_CHUNK_NUMEL", 50)  # [48], [1200], [6, 6]
    chunked = run_optimizer(MAKERS[name])
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked))


# Dim 0 of 7 and 1 split unevenly over two ranks; one rank holds an empty shard of the (1, 3).
SHARDED_SHAPES = [(7, 5), (5,), (1, 3), (4, 4)]
SHARDED_CASES = {
    "lamb": dict(lr=1e-2, eps=1e-6, weight_decay=0.1),
    "ademamix": dict(lr=1e-2, alpha=5.0, alpha_warmup=3, beta3_warmup=3, weight_decay=0.1),
}


def _train_sharded_or_not(name: str, mesh=None) -> tuple[nn.Module, torch.optim.Optimizer]:
    from torch.distributed.tensor import Shard, distribute_tensor

    g = torch.Generator().manual_seed(0)
    full = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHARDED_SHAPES]
    full[3].zero_()  # LAMB's |theta| = 0 branch, on every shard at once
    shard = (lambda t: distribute_tensor(t, mesh, [Shard(0)])) if mesh else (lambda t: t)
    model = nn.ParameterList(nn.Parameter(shard(t)) for t in full)
    opt = optimizers.build(name, model, **SHARDED_CASES[name])
    for step in range(5):
        for p, grad in zip(model, toy_grads(step, full)):
            p.grad = shard(grad)
        opt.step()
    return model, opt


def _sharded_worker(rank: int, store_path: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    # Three chunks, so LAMB's per-chunk all-reduces must pair up across ranks with uneven shards.
    optimizers.chunking.CPU_CHUNK_NUMEL = 20
    try:
        mesh = init_device_mesh("cpu", (2,))
        for name in SHARDED_CASES:
            model, opt = _train_sharded_or_not(name, mesh)
            single, _ = _train_sharded_or_not(name)
            for p, q in zip(model, single):
                torch.testing.assert_close(p.full_tensor(), q.detach(), rtol=1e-12, atol=1e-14)
            # State stays DTensor (a DCP checkpoint needs it) and is counted per shard.
            assert all(isinstance(v, DTensor) for s in opt.state.values() for v in s.values()
                       if isinstance(v, torch.Tensor))
            assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
                name, model, **SHARDED_CASES[name])
        dist.barrier()  # leave together: see runners.parallel.shutdown
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_dtensor_shards_match_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on a small machine
    mp.spawn(_sharded_worker, args=(str(tmp_path / "store"),), nprocs=2, join=True)
