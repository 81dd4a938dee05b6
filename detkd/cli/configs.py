"""``detkd configs``: detkd's own configs, installed with the package, and what each is."""

from __future__ import annotations

import argparse

from detkd.errors import DetkdError

HELP = """\
List the configs that come with detkd (the repository's configs/ folder, installed inside the
package), each with its one-line description (the first comment line of the file). Any command
takes one by name from any folder: a config path that does not exist where it is given is looked
up among these, with or without the leading configs/ (a file of the working directory of the
same name wins):

  detkd train synth/teacher.yaml
  detkd distill configs/voc/distill_r18.yaml
  detkd demo --data bccd

examples:
  detkd configs           every config
  detkd configs voc       the configs under voc/
  detkd configs --path    only the folder they are in"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("configs", help="list detkd's own configs (usable by name from any folder)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default="", metavar="FOLDER",
                        help="only the configs under this folder (e.g. voc, synth, _base_)")
    parser.add_argument("--path", action="store_true", help="print the folder of detkd's configs and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detkd.config.files import configs_root, list_configs

    if args.path:
        print(configs_root())
        return 0
    configs = list_configs(args.folder)
    if not configs:
        raise DetkdError(f"{args.folder}: no config of detkd's under this folder (`detkd configs` lists them all)")
    width = max(len(name) for name, _ in configs)
    print(f"detkd's configs ({configs_root()}), by name from any folder, e.g. detkd train synth/teacher.yaml:")
    for name, text in configs:
        print(f"  {name:<{width}}  {text}")
    return 0
