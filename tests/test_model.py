import pytest
import torch

from models import GPT, GPTConfig, build_model, model_config

# Published GPT-2 sizes (50257-token vocabulary, tied head, biases): the HF checkpoints' counts.
PUBLISHED = {"gpt2_small": 124_439_808, "gpt2_medium": 354_823_168,
             "gpt2_large": 774_030_080, "gpt2_xl": 1_557_611_200}


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_counts_match_published_gpt2(name):
    with torch.device("meta"):
        model = build_model(name, vocab_size=50257)
    assert model.num_params() == PUBLISHED[name]


def test_tied_head_and_scaled_residual_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=8, n_head=2, n_embd=32))
    assert model.lm_head.weight is model.wte.weight
    assert sum(1 for _ in model.parameters()) == len(dict(model.named_parameters()))
    proj_std = torch.cat([b.attn.proj.weight.flatten() for b in model.h]).std().item()
    fc_std = torch.cat([b.mlp.fc.weight.flatten() for b in model.h]).std().item()
    assert abs(proj_std - 0.02 / 4) < 0.001  # 0.02 / sqrt(2 * n_layer)
    assert abs(fc_std - 0.02) < 0.002


def test_qkv_layout_matches_separate_projections():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=4, n_embd=16)
    attn = GPT(cfg).h[0].attn
    layout = attn.qkv_layout()
    assert (layout.n_head, layout.head_dim, layout.n_embd) == (4, 4, 16)
    x = torch.randn(2, 8, 16)
    q, k, v = attn.qkv(x).split(16, dim=2)
    w = attn.qkv.weight
    # Head h of Q is rows [h*hd, (h+1)*hd) of the fused weight.
    h = 2
    rows = slice(h * 4, (h + 1) * 4)
    assert torch.allclose(q[..., rows], x @ w[rows].T + attn.qkv.bias[rows], atol=1e-6)
    assert torch.allclose(v, x @ w[32:].T + attn.qkv.bias[32:], atol=1e-6)


def test_forward_loss_near_uniform_at_init():
    torch.manual_seed(0)
    model = build_model("nano")
    idx, targets = torch.randint(0, 256, (2, 2, 64))
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 64, 256)
    assert abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 0.1


def test_flops_per_token_is_6n_plus_attention():
    cfg = model_config("gpt2_small")
    with torch.device("meta"):
        model = GPT(cfg)
    n = model.num_params() - cfg.block_size * cfg.n_embd
    assert model.flops_per_token(1024) == 6 * n + 12 * 12 * 768 * 1024


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'gpt5'.*gpt2_small"):
        model_config("gpt5")
