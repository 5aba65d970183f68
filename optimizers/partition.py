"""Adam-mini's partition: which entries of each parameter share one second-moment value v.

Every tensor is viewed as a matrix whose rows are its dim-0 slices (a 1-D tensor is a column),
and its rows are cut into consecutive segments; inside a segment, every `block_rows` consecutive
rows share one v. That covers the whole official v1.1.1 partition:

    kind      block                                  where
    token     1 row (a vocabulary entry)             token embedding / tied output head
    head      head_dim rows                          each Q and K head
    neuron    1 row (an output neuron)               V, attention output projection, MLP
    tensor    all rows                               norm weights, position table, anything else
    element   1 element (the tensor as a column)     biases: plain Adam

Our GPT-2 is partitioned from its structure (module types, tied weights and the fused qkv layout
its attention declares through `qkv_layout()`). Models without a declared layout fall back to
the official name rules (plain substrings of the lower-cased parameter name, first match wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

KINDS = ("token", "head", "neuron", "tensor", "element")


@dataclass(frozen=True)
class Segment:
    kind: str
    rows: int
    block_rows: int

    @property
    def n_blocks(self) -> int:
        return self.rows // self.block_rows


@dataclass(frozen=True)
class Layout:
    """How one parameter, viewed as a (rows, cols) matrix, is cut into v blocks."""

    cols: int
    segments: tuple[Segment, ...]
    decay: bool

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    @property
    def n_blocks(self) -> int:
        return sum(s.n_blocks for s in self.segments)

    @property
    def one_row_per_block(self) -> bool:
        return all(s.block_rows == 1 for s in self.segments)

    def row_to_block(self, device=None) -> torch.Tensor:
        """Index of each row's block, over the whole tensor."""
        parts, first = [], 0
        for s in self.segments:
            parts.append(first + torch.arange(s.rows, device=device) // s.block_rows)
            first += s.n_blocks
        return torch.cat(parts)

    def block_numel(self, dtype=None, device=None) -> torch.Tensor:
        """Elements per block: the divisor that turns a block's sum of g^2 into its mean."""
        return torch.cat([
            torch.full((s.n_blocks,), float(s.block_rows * self.cols), dtype=dtype, device=device)
            for s in self.segments
        ])


def _matrix(shape: torch.Size) -> tuple[int, int]:
    rows = shape[0] if len(shape) else 1
    return rows, shape.numel() // rows if rows else 0


def uniform(kind: str, shape: torch.Size, decay: bool, block_rows: int | None = None) -> Layout:
    """One segment over the whole tensor; block_rows=None means one block for all of it."""
    rows, cols = _matrix(shape)
    return Layout(cols, (Segment(kind, rows, block_rows or rows),), decay)


def elementwise(shape: torch.Size) -> Layout:
    # Viewed as a column, each element is a row of its own: plain Adam. Biases never decay.
    return Layout(1, (Segment("element", shape.numel(), 1),), decay=False)


def by_shape(shape: torch.Size) -> Layout:
    """For a parameter known by its shape alone (one added with add_param_group): one v per row
    of a matrix, the official block for most weights, and plain Adam for a vector. Never one v for
    a whole matrix, the default partition the authors found unstable. (`decay` is unused: the
    group's weight_decay applies.)"""
    if len(shape) >= 2:
        return uniform("neuron", shape, decay=True, block_rows=1)
    return elementwise(shape)


def fused_qkv(shape: torch.Size, n_head: int, head_dim: int, v_one_block: bool) -> Layout:
    rows, cols = _matrix(shape)
    c = n_head * head_dim
    if rows != 3 * c:
        raise ValueError(f"adam_mini: a fused qkv weight of shape {tuple(shape)} does not hold "
                         f"3 x {n_head} heads x {head_dim} rows")
    v = Segment("tensor", c, c) if v_one_block else Segment("neuron", c, 1)
    return Layout(cols, (Segment("head", c, head_dim), Segment("head", c, head_dim), v), decay=True)


def partition(model: nn.Module, v_one_block: bool = False, dim: int | None = None,
              n_heads: int | None = None) -> dict[nn.Parameter, Layout]:
    """Layout of every trainable parameter of `model`, in `model.parameters()` order."""
    if any(hasattr(m, "qkv_layout") for m in model.modules()):
        if dim is not None or n_heads is not None:
            raise ValueError("optimizer 'adam_mini': dim and n_heads are for models without a "
                             "declared qkv layout; this model declares its own")
        layouts = structural(model, v_one_block)
    else:
        layouts = by_name(model.named_parameters(), v_one_block, *_heads(model, dim, n_heads))
    return {p: layouts[p] for p in model.parameters() if p.requires_grad}


# -- from the model's structure ------------------------------------------------------------------

_NORMS = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def structural(model: nn.Module, v_one_block: bool) -> dict[nn.Parameter, Layout]:
    modules = list(model.modules())
    fused = {m.qkv.weight: m.qkv_layout() for m in modules if hasattr(m, "qkv_layout")}
    linear = {m.weight for m in modules if isinstance(m, nn.Linear)}
    embedding = {m.weight for m in modules if isinstance(m, nn.Embedding)}
    tied = linear & embedding  # the token table doubling as the output head

    layouts: dict[nn.Parameter, Layout] = {}
    for module in modules:
        for name, p in module.named_parameters(recurse=False):
            if name == "bias":
                layouts[p] = elementwise(p.shape)
            elif p in fused:
                lay = fused[p]
                layouts[p] = fused_qkv(p.shape, lay.n_head, lay.head_dim, v_one_block)
            elif isinstance(module, _NORMS):
                layouts[p] = uniform("tensor", p.shape, decay=False)
            elif p in tied:
                layouts[p] = uniform("token", p.shape, decay=True, block_rows=1)
            elif isinstance(module, nn.Linear):
                layouts[p] = uniform("neuron", p.shape, decay=True, block_rows=1)
            else:
                # Untied embeddings are position tables here (the official gives wpe one scalar),
                # like any tensor no rule above claims.
                layouts[p] = uniform("tensor", p.shape, decay=True)
    return layouts


# -- the official v1.1.1 name rules, for models that do not declare their layout -----------------

QK_NAMES = ("k_proj", "q_proj", "wq", "wk", "query", "key")
TOKEN_NAMES = ("embed", "embd", "wte", "lm_head", "output", "final_layer")
V_NAMES = ("v_proj", "wv", "value")
NEURON_NAMES = ("o_proj", "wo", "attn.proj", "feed_forward", "linear", "mlp")
NO_DECAY_NAMES = ("norm", "ln", "bias")


def _has(name: str, keys: Iterable[str]) -> bool:
    return any(k in name for k in keys)


def by_name(named_params: Iterable[tuple[str, nn.Parameter]], v_one_block: bool,
            dim: int | None, n_heads: int | None) -> dict[nn.Parameter, Layout]:
    neuron_names = NEURON_NAMES if v_one_block else NEURON_NAMES + V_NAMES
    layouts: dict[nn.Parameter, Layout] = {}
    for name, p in named_params:
        name = name.lower()
        decay = not _has(name, NO_DECAY_NAMES)
        if "bias" in name:
            layouts[p] = elementwise(p.shape)
        elif _has(name, QK_NAMES):
            layouts[p] = _heads_layout(name, p.shape, decay, dim, n_heads)
        elif _has(name, TOKEN_NAMES + neuron_names) and p.dim() >= 2:
            kind = "token" if _has(name, TOKEN_NAMES) else "neuron"
            layouts[p] = uniform(kind, p.shape, decay, block_rows=1)
        else:
            # 1-D tensors matching a per-row name land here too (the official crashes on them).
            layouts[p] = uniform("tensor", p.shape, decay)
    return layouts


def _heads_layout(name, shape, decay, dim, n_heads) -> Layout:
    if dim is None or n_heads is None:
        raise ValueError(f"optimizer 'adam_mini': cannot tell the heads of {name!r}: pass dim "
                         "and n_heads (the model's hidden size and query head count)")
    head_numel = dim * dim // n_heads  # the official block: one head's slice of a (.., dim) weight
    rows, cols = _matrix(shape)
    if head_numel % cols or rows % (head_numel // cols):
        raise ValueError(f"optimizer 'adam_mini': {name!r} of shape {tuple(shape)} does not split "
                         f"into heads of {head_numel} elements (dim={dim}, n_heads={n_heads})")
    return uniform("head", shape, decay, block_rows=head_numel // cols)


def _heads(model: nn.Module, dim: int | None, n_heads: int | None) -> tuple[int | None, int | None]:
    """dim and n_heads as given, else read from a config the model carries."""
    cfg = getattr(model, "config", None)
    for d, h in (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"), ("dim", "n_heads")):
        if dim is None and n_heads is None and hasattr(cfg, d) and hasattr(cfg, h):
            return getattr(cfg, d), getattr(cfg, h)
    return dim, n_heads


def count_blocks(layouts: dict[nn.Parameter, Layout]) -> dict[str, int]:
    """Number of v values per kind."""
    counts = dict.fromkeys(KINDS, 0)
    for layout in layouts.values():
        for s in layout.segments:
            counts[s.kind] += s.n_blocks
    return counts
