from .gpt2 import GPT, GPTConfig, QKVLayout, CausalSelfAttention
from .presets import PRESETS, build_model, model_config

__all__ = ["GPT", "GPTConfig", "QKVLayout", "CausalSelfAttention", "PRESETS", "build_model", "model_config"]
