"""How the command-line entry points end: problems the user can fix are one `error:` line each
(exit 1), an interrupted run says how to resume it (exit 143), anything else is a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from runners.config import ConfigError
from runners.launch import LaunchFailed


def main(entry: Callable[[list[str]], object]) -> None:
    from runners.train import Interrupted

    try:
        entry(sys.argv[1:])
    except ConfigError as e:
        sys.exit("\n".join(f"error: {line}" for line in e.errors))
    except LaunchFailed as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:
        print(f"interrupted: {e}; run again to resume", file=sys.stderr)
        sys.exit(143)
