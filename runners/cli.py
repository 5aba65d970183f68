"""The command line of runners.train, runners.suite and runners.tune: Hydra's flags and how the
entry points end.

    --help / -h            the groups, their choices and the main keys
    --cfg job|hydra|all    the composed config (checked), nothing run; --resolve, --package
    --info [searchpath|defaults|defaults-tree|config|all]   Hydra's view of the composition
    --shell-completion     Hydra's completion: eval "$(optarena-train -sc install=bash)"
    -m / --multirun        sweeps (optimizer=a,b optimizer.lr=x,y model=... seed=0,1,2) become
                           one suite's grid: same run_ids, skipping and resume as a suite file's
    --config-dir DIR       a folder of your own suites (suite/NAME.yaml, and any group) before ours

Problems the user can fix are one `error:` line each (exit 2, nothing written); a run that
cannot go on (held by another process, a full disk: runners.run_folder.RunError) or a suite with
failed runs is one `error:` line too (exit 1); an interrupted run says how to resume it (exit
143); anything else is a traceback, as a bug should be.
"""

from __future__ import annotations

import sys
from typing import Callable

from omegaconf import OmegaConf

from runners.launch import LaunchFailed
from runners.run_folder import RunError
from runners.schema import ConfigError, help_rows

USAGE_EXIT = 2
# What each entry point is called in --help (as `python -m` and as the installed command).
PROGRAMS = {
    "train": ("runners.train", "optarena-train", "one run into results/<suite>/<run_id>/"),
    "suite": ("runners.suite", "optarena-suite", "a suite: models x optimizers x lrs x seeds, then the report"),
    "tune": ("runners.tune", "optarena-tune", "Optuna lr tuning, equal trials per optimizer -> tuned.yaml"),
}


def _parser():
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str):  # argparse's own: one line and exit 2, as our errors
        raise ConfigError([f"{message} (see --help)"])

    parser.error = error
    return parser


def help_text(program: str, config_dir: str | None) -> str:
    from runners.hydra_app import hydra_session

    module, command, what = PROGRAMS[program]
    with hydra_session(config_dir) as hydra:
        groups = hydra.format_config_groups(lambda g: not g.startswith("hydra"))
    width = max(len(k) for k, _ in help_rows())
    keys = "\n".join(f"  {k:<{width}}  {doc}" for k, doc in help_rows() if doc)
    return f"""{command} (python -m {module}): {what}

usage: python -m {module} [flags] [group=choice ...] [key=value ...]

Groups (group=choice):
{groups}
Keys (key=value; optimizer.<option> takes the chosen optimizer's options, see README):
{keys}

Flags:
  -h, --help              this help
  -c, --cfg job           print the composed, checked config and run nothing (--resolve, -p PACKAGE)
  -i, --info [WHAT]       Hydra's view: searchpath, defaults, defaults-tree, config, all
  -m, --multirun          sweeps become one suite's grid: optimizer=adamw,lamb optimizer.lr=1e-3,3e-3
                          model=nano seed=0,1,2 (other keys cannot be swept: one suite, one budget)
  -cd, --config-dir DIR   your own suites folder (suite/NAME.yaml ...), searched before suites/
  -sc, --shell-completion install=bash: eval "$({command} -sc install=bash)"

Examples:
  python -m runners.train optimizer=lamb optimizer.lr=3e-3 budget.steps=100
  python -m runners.suite suite=tiny only=[adamw,adam_mini] seeds=3
  python -m runners.train -m optimizer=adamw,lamb optimizer.lr=1e-3,3e-3 seed=0,1
"""


def _show_cfg(args) -> None:
    from runners.hydra_app import compose_config, hydra_session

    cfg = compose_config(args.overrides, args.config_dir, multirun=args.multirun)
    if args.cfg != "job":  # Hydra's own node too
        with hydra_session(args.config_dir) as hydra:
            hydra.show_cfg(config_name="config", overrides=[], cfg_type="hydra", package=None)
        if args.cfg == "hydra":
            return
    node = OmegaConf.create(cfg)
    if args.package:
        node = OmegaConf.select(node, args.package)
        if node is None:
            raise ConfigError([f"--package {args.package}: no such key in the config"])
        print(f"# @package {args.package}")
    sys.stdout.write(node if isinstance(node, str) else
                     OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else f"{node}\n")


def _dispatch(entry: Callable, program: str, argv: list[str]) -> None:
    from runners.hydra_app import hydra_session, parse

    if argv[:1] == ["--config"]:  # a resolved run.json from a launcher: no composition
        entry(argv)
        return
    args = _parser().parse_intermixed_args(argv)  # flags anywhere: a=1 -m b=2,3
    if args.config_path or args.config_name or args.experimental_rerun:
        raise ConfigError(["--config-path, --config-name and --experimental-rerun are not used here: "
                           "put your suites in a folder and pass --config-dir DIR"])
    if args.help:
        print(help_text(program, args.config_dir))
    elif args.hydra_help:
        with hydra_session(args.config_dir) as hydra:
            hydra.hydra_help(config_name="config", args_parser=_parser(), args=args)
    elif args.cfg:
        _show_cfg(args)
    elif args.info:
        parse(args.overrides)
        with hydra_session(args.config_dir) as hydra:
            hydra.show_info(args.info, config_name="config", overrides=args.overrides)
    elif args.shell_completion:
        with hydra_session(args.config_dir) as hydra:
            hydra.shell_completion(config_name="config", overrides=args.overrides)
    else:
        entry(args.overrides, multirun=args.multirun, config_dir=args.config_dir)


def main(entry: Callable, program: str) -> None:
    """Run `entry(overrides, multirun=..., config_dir=...)` from sys.argv, Hydra's flags first."""
    from runners.train import Interrupted

    try:
        _dispatch(entry, program, sys.argv[1:])
    except ConfigError as e:
        print("\n".join(f"error: {line}" for line in e.errors), file=sys.stderr)
        sys.exit(USAGE_EXIT)
    except (LaunchFailed, RunError) as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:
        print(f"interrupted: {e}; run again to resume", file=sys.stderr)
        sys.exit(143)


def command(program: str) -> Callable[[], None]:
    """The installed console scripts (optarena-train, -suite, -tune): Hydra's shell completion
    works for a command on PATH, not for `python -m`."""
    def run() -> None:
        import importlib

        module = importlib.import_module(PROGRAMS[program][0])
        main(module.ENTRY, program)

    return run


train, suite, tune = command("train"), command("suite"), command("tune")
