"""Named model sizes. GPT-2 sizes follow the published shapes; the `nano*` ones are CPU-sized.

The nano ladder (nano_xxs, nano_xs, nano_s, nano_m) spans 10.6x in parameters, for ladder suites on
CPUs (suites/suite/tiny_scaling.yaml), and `nano` is the next size (34x): a byte vocabulary keeps
the embedding and the head cheap; the ladder's heads are 16 wide. Its top is 3 x 80 rather than a
wider or deeper one because the top size is most of a ladder's cost (a rung's FLOPs go as N^2 at
a fixed tokens-per-parameter ratio).
"""

from __future__ import annotations

from dataclasses import replace

from .gpt2 import GPT, GPTConfig

PRESETS: dict[str, GPTConfig] = {
    # The nano ladder, parameters as GPT.num_params() counts them (the tied head once, with wte).
    "nano_xxs": GPTConfig(vocab_size=256, block_size=128, n_layer=1, n_head=2, n_embd=32),  # 25k
    "nano_xs": GPTConfig(vocab_size=256, block_size=128, n_layer=2, n_head=3, n_embd=48),  # 75k
    "nano_s": GPTConfig(vocab_size=256, block_size=128, n_layer=2, n_head=4, n_embd=64),  # 125k
    "nano_m": GPTConfig(vocab_size=256, block_size=128, n_layer=3, n_head=5, n_embd=80),  # 264k
    # ~0.8M parameters with a byte vocabulary: a few ms per step on two CPU cores.
    "nano": GPTConfig(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128),  # 842k
    "gpt2_small": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2_medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2_large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2_xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),  # 1.5B
}


def model_config(name: str, **overrides) -> GPTConfig:
    if name not in PRESETS:
        raise ValueError(
            f"unknown model {name!r}: choose one of {', '.join(PRESETS)} (suites/model/*.yaml)"
        )
    unknown = set(overrides) - set(GPTConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"model {name!r}: unknown field(s) {sorted(unknown)}")
    return replace(PRESETS[name], **overrides)


def build_model(name: str, **overrides) -> GPT:
    return GPT(model_config(name, **overrides))
