"""The `genreid` command line.

    genreid pack --data ../shared/data/cuhk03/bounding_box_train --out packs/cuhk03_train_64x32.npz
    genreid train generator --data packs/cuhk03_train_64x32.npz --out checkpoints/default
    genreid train prior --checkpoint checkpoints/default
    genreid train preview --checkpoint checkpoints/default
    genreid train img2id --checkpoint checkpoints/default
    genreid train img2noise --checkpoint checkpoints/default --data packs/cuhk03_train_64x32.npz
    genreid eval --data ../shared/data/cuhk03 --checkpoint checkpoints/default --json
    genreid index --checkpoint checkpoints/default --data ../shared/data/cuhk03
    genreid configure --checkpoint checkpoints/default img2id.flip=true img2id.metric=cosine
    genreid store --checkpoint checkpoints/default --parts img2id,img2noise --as int8
    genreid replace --checkpoint checkpoints/default --from runs/more/set --parts generator
    genreid sample --checkpoint checkpoints/default --out grid.png
    genreid bench --json
    genreid loadtest --clients 16 --seconds 60

Each command is one function in a core/cli_*.py module that adds its parser to the
subcommands and sets its handler with `set_defaults(func=...)`; a handler returns the exit
status (None: 0) or raises, and `main` turns the expected errors into status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import (
    cli_explore,
    cli_measure,
    cli_pictures,
    cli_retrieval,
    cli_sets,
    cli_space,
    cli_train,
    distributed,
)

# In the order `genreid --help` lists them.
COMMANDS = (
    cli_sets.add_pack,
    cli_train.add_train,
    cli_retrieval.add_eval,
    cli_retrieval.add_index,
    cli_sets.add_store,
    cli_sets.add_configure,
    cli_sets.add_replace,
    cli_pictures.add_sample,
    cli_pictures.add_diagnose,
    cli_pictures.add_decompose,
    cli_space.add_space,
    cli_measure.add_bench,
    cli_measure.add_loadtest,
    cli_explore.add_explore,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genreid", description=(
        "Generative person re-identification: identity as the conditioning of a diffusion model."))
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    finished = False
    try:
        args = build_parser().parse_args(argv)
        args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # as typed, for records
        from .checkpoint import CheckpointError
        from .data import DataError

        try:
            status = args.func(args) or 0
        except (DataError, CheckpointError, ValueError, FloatingPointError) as e:
            print(f"genreid {args.command}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; the last saved checkpoint is intact (run the same command to resume)",
                  file=sys.stderr)
            return 130
        finished = True
        return status
    finally:
        # Under torchrun: leave the process group on every way out, so a failing rank does
        # not hold the others; together after a command that finished, at once after one
        # that failed (the other ranks may never reach the barrier).
        distributed.teardown(wait=finished)


if __name__ == "__main__":
    sys.exit(main())
