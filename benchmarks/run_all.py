"""`make bench`: every benchmark's rows in one markdown table, under a line naming the machine.

A benchmark is a module of this folder offering `add_arguments(parser)` (options under its
own names) and `rows(args) -> list[table.Row]`; list it in SOURCES to add its rows.

Run: python -m benchmarks.run_all [--rounds R] [--device auto] [--only NAME ...] [module options]
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks.table import machine, markdown
from vi_lab.runtime import resolve_device

SOURCES = ("throughput", "families", "evaluation", "scaling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the side-by-side rows")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="+", choices=SOURCES, default=SOURCES, help="run only these")
    modules = {name: importlib.import_module(f"benchmarks.{name}") for name in SOURCES}
    for module in modules.values():
        module.add_arguments(parser)
    args = parser.parse_args()
    rows = [row for name in args.only for row in modules[name].rows(args)]
    print(f"Machine: {machine()}; device {resolve_device(args.device)}")
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
