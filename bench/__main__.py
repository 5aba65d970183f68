"""`make bench`: every benchmark, each printing ratios against a baseline measured in the same run."""

import sys

from bench import optimizer_step, train_loop

if __name__ == "__main__":
    status = train_loop.main([])
    status |= optimizer_step.main([])
    sys.exit(status)
