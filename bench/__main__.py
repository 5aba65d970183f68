"""`make bench`: every benchmark, each printing ratios against a baseline measured in the same run
(the GPU table too, on a machine with a CUDA device)."""

import sys

import torch

from bench import compiled_step, gpu, optimizer_step, train_loop

if __name__ == "__main__":
    status = train_loop.main([])
    status |= optimizer_step.main([])
    status |= compiled_step.main([])
    if torch.cuda.is_available():
        status |= gpu.main([])
    sys.exit(status)
