"""`make bench`: every benchmark, each printing ratios against a baseline measured in the same run."""

import sys

from bench import train_loop

if __name__ == "__main__":
    sys.exit(train_loop.main([]))
