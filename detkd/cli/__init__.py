"""The ``detkd`` command line: one subcommand per module, each a thin layer over the library.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a ``run(args) -> int``. User errors (:class:`~detkd.errors.DetkdError`) end the
program with a one-line reason on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: threads that wait sleep instead of spinning. With two jobs on the
# same cores, spinning threads of one job hold the cores the other job's threads wait for, and
# both slow down several times over (bench/contention.py); set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from detkd import __version__
from detkd.cli import ablate, bench, configs, data, demo, distill, doctor, evaluate, export, init, train
from detkd.errors import DetkdError

SUBCOMMANDS = (demo, init, data, evaluate, train, distill, doctor, export, bench, ablate, configs)

DESCRIPTION = """\
detkd: make object detectors small and fast by knowledge distillation
(Chen et al., NeurIPS 2017) on torchvision Faster R-CNN.

Start with `detkd demo`: a teacher, two students and their distilled versions
on the embedded dataset, compared in a report (about 20 minutes on 2 CPU cores; README).
`detkd init DATA_ROOT --format voc` writes the configs of a distillation study
on your data (`detkd configs` lists detkd's own, usable by name from any folder).
Then `detkd train` / `detkd distill` / `detkd eval` your own configs,
`detkd doctor DISTILL_CONFIG` to see whether a teacher can teach a student first,
`detkd bench CONFIG ...` to compare the speed of detectors, and `detkd ablate
CONFIG` for the paper's ablations (Tables 4 and 5) over seeds.
`detkd COMMAND --help` explains each."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detkd", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"detkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--offline", action="store_true", help="never download pretrained weights (as DETKD_OFFLINE=1): "
                        "a file missing from torch's cache is an error saying where to put it")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options too (`detkd train CFG --resume train.lr=0.01`)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    logging.captureWarnings(True)
    if args.offline:  # the environment: worker processes (demo, ablate, torchrun) inherit it
        os.environ["DETKD_OFFLINE"] = "1"
    try:
        return int(args.func(args) or 0)
    except DetkdError as e:
        print(f"detkd: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder, a file where a folder belongs
        where = e.filename if e.filename is not None else "detkd"
        print(f"detkd: error: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("detkd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
