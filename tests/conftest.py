import os
import sys
from pathlib import Path

# One thread per process: on two shared cores, torch's default two threads make small CPU
# steps several times slower (each parallel region waits for a core another process holds).
# Subprocesses inherit it, so runs compared across processes use the same arithmetic.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("WANDB_MODE", "disabled")

from tests.slurm_cluster import slurm_cluster  # noqa: E402,F401  (one cluster for every module)

# A run small enough for a test: a 2-layer nano model, 8 sequences of 32 tokens per step.
SMALL_RUN = [
    "model.n_layer=2", "model.n_embd=64", "model.block_size=32", "budget.seq_len=32",
    "budget.global_batch=8", "budget.tokens=null", "budget.steps=30", "budget.eval_every=10",
    "data.val_tokens=2048", "train.progress=false",
]


# The tiny suite's mechanics with the config's defaults: every optimizer at its default lr (its
# own lrs are tuned at its own budget, suites/tuned.yaml, not at SMALL_RUN's), one run at a time,
# seeded TPE tuning in this process.
TINY = ["suite=tiny", "optimizers=all", "seeds=[0]", "workers=1", "branches=null", "baseline=adamw",
        "tune.trials=20", "tune.sampler=tpe", "tune.workers=1"]


@pytest.fixture(scope="session")
def shakespeare_bytes():
    from runners.data import prepare

    return prepare("shakespeare_bytes")


@pytest.fixture
def small_cfg(tmp_path, shakespeare_bytes):
    """A composed (unresolved) config for a small run writing under tmp_path."""
    from runners.hydra_app import compose_config

    def make(*overrides: str) -> dict:
        return compose_config([*SMALL_RUN, f"results_dir={tmp_path / 'results'}", *overrides])

    return make
