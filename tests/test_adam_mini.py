"""Adam-mini against the official PyPI package (adam-mini==1.1.1), its partition, memory and API.

The official optimizer routes tensors by name, so the reference trajectory runs on a GPT-2 in
the authors' layout (separate wq/wk/wv/wo, `mlp` submodule, tied wte/lm_head, ln_* norms).
Ours runs on that same model (name rules) and on our fused-qkv GPT with the same weights
(structural partition); all three trajectories must agree.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optimizers
from models import GPT, GPTConfig, build_model
from optimizers.partition import count_blocks, partition

CFG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, bias=True)
HP = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models: threads only contend with each other (and with other tests on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RefAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        c = cfg.n_embd
        self.n_head = cfg.n_head
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(c, c, bias=cfg.bias) for _ in range(4))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (w(x).view(B, T, self.n_head, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))


class RefMLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class RefBlock(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn, self.mlp = RefAttention(cfg), RefMLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    """The authors' GPT-2 layout (examples/gpt2/model.py), computing what models.GPT computes."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.h = nn.ModuleList(RefBlock(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for p in self.parameters():  # every tensor non-trivial, biases and norms included
            nn.init.normal_(p, std=0.05 if p.dim() > 1 else 0.3)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x)), None


# The reference layout's names for the tensors both models share, and ours.
RENAMES = {"attn.wo": "attn.proj", "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
QKV = ("wq", "wk", "wv")


def rename(name: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        name = name.replace(old, new)
    return name


def fused_copy(ref: RefGPT) -> GPT:
    """Our GPT with ref's weights: qkv is the row concatenation of wq, wk, wv."""
    ref_sd = ref.state_dict()
    sd = {rename(k, RENAMES): t for k, t in ref_sd.items() if not any(f".{w}." in k for w in QKV)}
    for k in ref_sd:
        if ".wq." in k:
            rows = [ref_sd[k.replace(".wq.", f".{w}.")] for w in QKV]
            sd[k.replace(".wq.", ".qkv.")] = torch.cat(rows)
    ours = GPT(CFG).double()
    ours.load_state_dict(sd)
    return ours


def as_ref_names(ours: GPT) -> dict[str, torch.Tensor]:
    """Our fused GPT's parameters split back into the reference layout's names."""
    out, c = {}, CFG.n_embd
    back = {new: old for old, new in RENAMES.items()}
    for name, t in ours.named_parameters():
        if ".qkv." in name:
            for i, w in enumerate(QKV):
                out[name.replace(".qkv.", f".{w}.")] = t[i * c:(i + 1) * c]
        else:
            out[rename(name, back)] = t
    return out


def train(model, opt, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(CFG.vocab_size, (4, CFG.block_size), generator=gen)
        targets = torch.randint(CFG.vocab_size, (4, CFG.block_size), generator=gen)
        opt.zero_grad(set_to_none=True)
        logits, _ = model(idx)  # the loss in float64 (GPT's own casts the logits to float32)
        F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1)).backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        yield


def max_rel_diff(got: dict, want: dict) -> float:
    assert got.keys() == want.keys()
    return max(((got[k] - want[k]).abs().max() / want[k].abs().max()).item() for k in want)


@pytest.mark.parametrize("v_one_block", [False, True])
def test_matches_official_v1_1_1(v_one_block):
    from adam_mini import Adam_mini

    torch.manual_seed(0)
    ref = RefGPT(CFG).double()
    named = RefGPT(CFG).double()
    named.load_state_dict(ref.state_dict())
    fused = fused_copy(ref)

    official = Adam_mini(ref.named_parameters(), **HP, dim=CFG.n_embd, n_heads=CFG.n_head, verbose=False)
    if v_one_block:
        official.wv_names = set()  # the README's short-run recipe
    by_names = optimizers.build("adam_mini", named, **HP, v_one_block=v_one_block,
                                dim=CFG.n_embd, n_heads=CFG.n_head)
    structural = optimizers.build("adam_mini", fused, **HP, v_one_block=v_one_block)

    start = {k: v.detach().clone() for k, v in ref.named_parameters()}
    assert max_rel_diff(as_ref_names(fused), start) == 0
    worst = 0.0
    runs = zip(train(ref, official, 25), train(named, by_names, 25), train(fused, structural, 25))
    for _ in runs:
        want = dict(ref.named_parameters())
        worst = max(worst, max_rel_diff(dict(named.named_parameters()), want),
                    max_rel_diff(as_ref_names(fused), want))
    moved = max_rel_diff(start, dict(ref.named_parameters()))
    assert moved > 0.1  # the trajectory went somewhere
    assert worst < 1e-6, worst
    print(f"max relative deviation from the official trajectory: {worst:.2e}")


def test_partition_of_gpt2_small():
    with torch.device("meta"):
        model = build_model("gpt2_small")
    L, H, C, V = 12, 12, 768, 50304
    counts = count_blocks(partition(model))
    assert counts == {
        "token": V,  # tied wte / lm_head: one v per token
        "head": L * 2 * H,  # Q and K heads
        "neuron": L * (C + C + 4 * C + C),  # V rows, attn proj, mlp fc, mlp proj
        "tensor": 1 + 2 * L + 1,  # wpe, ln_1/ln_2 weights, ln_f weight
        "element": L * (3 * C + C + 4 * C + C + 2 * C) + C,  # every bias
    }
    one_v = count_blocks(partition(model, v_one_block=True))
    assert one_v["neuron"] == counts["neuron"] - L * C and one_v["tensor"] == counts["tensor"] + L

    mini = optimizers.predict_state_bytes("adam_mini", model)
    adamw = optimizers.predict_state_bytes("adamw", model)
    assert mini == 4 * (model.num_params() + sum(counts.values()))
    assert mini <= 0.501 * adamw, mini / adamw


def test_predicted_state_bytes_are_exact():
    model = build_model("nano")
    for v_one_block in (False, True):
        opt = optimizers.build("adam_mini", model, v_one_block=v_one_block)
        model(torch.randint(256, (2, 8)), torch.randint(256, (2, 8)))[1].backward()
        opt.step()
        assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
            "adam_mini", model, v_one_block=v_one_block)


def test_state_dict_round_trip():
    """A step after save + load into a fresh optimizer equals the step without the round trip."""
    torch.manual_seed(0)
    model = build_model("nano", n_layer=2)
    opt = optimizers.build("adam_mini", model)
    for i in range(3):
        nano_step(model, opt, seed=i)
    twin = copy.deepcopy(model)
    twin_opt = optimizers.build("adam_mini", twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    losses = nano_step(model, opt, seed=3), nano_step(twin, twin_opt, seed=3)
    assert losses[0] == losses[1]  # step() returns the closure's loss
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert all(s["step"] == 4 for s in twin_opt.state.values())


def test_an_added_group_gets_a_v_per_matrix_row_and_plain_adam_for_vectors():
    """add_param_group brings no model to read blocks from: partition.by_shape decides."""
    opt = optimizers.build("adam_mini", build_model("nano", n_layer=1))
    matrix, vector = nn.Parameter(torch.randn(5, 8)), nn.Parameter(torch.randn(3))
    opt.add_param_group({"params": [matrix, vector]})
    matrix.grad, vector.grad = torch.randn(5, 8), torch.randn(3)
    opt.step()
    assert opt.state[matrix]["v"].shape == (5,) and opt.state[vector]["v"].shape == (3,)


def nano_step(model, opt, seed):
    tokens = torch.randint(256, (2, 17), generator=torch.Generator().manual_seed(seed))

    def closure():
        opt.zero_grad()
        loss = model(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())[1]
        loss.backward()
        return loss

    return opt.step(closure)


@pytest.mark.parametrize("hp, param", [
    (dict(lr=-1.0), "lr"), (dict(betas=(1.0, 0.95)), "betas[0]"), (dict(betas=(0.9, -0.1)), "betas[1]"),
    (dict(eps=-1e-8), "eps"), (dict(weight_decay=-0.1), "weight_decay"), (dict(bogus=1), "bogus"),
])
def test_rejects_bad_hyperparameters(hp, param):
    with pytest.raises(ValueError, match=f"adam_mini.*{re.escape(param)}"):
        optimizers.build("adam_mini", build_model("nano", n_layer=1), **hp)


def test_name_rules_read_or_need_the_heads():
    model = RefGPT(CFG)  # no declared qkv layout: the official name rules
    with pytest.raises(ValueError, match="adam_mini.*dim and n_heads"):
        optimizers.build("adam_mini", model)  # and no config to read the heads from
    with pytest.raises(ValueError, match="adam_mini.*does not split"):
        optimizers.build("adam_mini", model, dim=CFG.n_embd, n_heads=5)
    given = partition(model, dim=CFG.n_embd, n_heads=CFG.n_head)
    model.config = CFG  # n_embd / n_head, as nanoGPT-style models carry them
    assert partition(model) == given
    assert count_blocks(given)["head"] == CFG.n_layer * 2 * CFG.n_head
    with pytest.raises(ValueError, match="declared qkv layout"):
        optimizers.build("adam_mini", GPT(CFG), dim=32, n_heads=4)
