"""`genreid space`: the identity space of a set described as data — its spread, principal
directions, and whether walks of a given range stay where the training persons are."""

from __future__ import annotations

import json

import numpy as np

from . import config

# The walks compared by default: the explorer's sweep (±3 sd around the mean, or around the
# identity) and the paper's absolute range.
WALKS = (("sd", "mean", 3.0), ("sd", "identity", 3.0), ("absolute", "mean", 0.3),
         ("absolute", "identity", 0.3))


def add_space(sub) -> None:
    p = sub.add_parser("space", help="describe a set's identity space and how far sweeps of a "
                                     "given range leave it")
    p.add_argument("--checkpoint", default=str(config.DEFAULT_CHECKPOINT))
    p.add_argument("--directions", type=int, default=8,
                   help="principal directions to list (default 8)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run_space)


def describe(table: np.ndarray, directions: int = 8, walks=WALKS) -> dict:
    """The figures `genreid space` prints, for an identity table (persons, dimensions)."""
    from .identity_space import IdentitySpace

    space = IdentitySpace(table)
    out = {
        "persons": int(len(table)), "dimensions": int(space.dim),
        "total_variance": round(space.total_variance, 6),
        "coordinate_sd": {k: round(float(f(space.std)), 4)
                          for k, f in (("min", np.min), ("median", np.median), ("max", np.max))},
        "largest_abs_value": round(float(np.abs(table).max()), 4),
        "spacing": round(space.spacing(), 4),
        "mean_pairwise_distance": round(float(_mean_pairwise(space.table)), 4),
        "explained": [round(float(e), 4) for e in space.explained[:directions]],
        "walks": [],
    }
    for units, around, k in walks:
        ends = space.sweep_ends(-k, k, units, around)
        reach = space.reach(ends)
        out["walks"].append({
            "range": f"±{k:g} {'sd' if units == 'sd' else 'absolute'} around the {around}",
            "ends_within_training_range": round(float(space.within_range(ends).mean()), 4),
            "reach_median": round(float(np.median(reach)), 3),
            "reach_p95": round(float(np.percentile(reach, 95)), 3),
            "reach_max": round(float(reach.max()), 3),
        })
    return out


def _mean_pairwise(table: np.ndarray) -> float:
    from .metrics import euclidean_distances

    d = euclidean_distances(table, table)
    n = len(table)
    return float(d.sum() / max(n * (n - 1), 1))


def run_space(args) -> None:
    from .api import GenReID

    model = GenReID.load(args.checkpoint, device="cpu", precision="fp32")
    table = model.table_identities(np.arange(model.num_identities))
    figures = describe(table, args.directions)
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    f = figures
    print(f"{args.checkpoint}: {f['persons']} training persons x {f['dimensions']} dimensions")
    print(f"  coordinate sd over persons: {f['coordinate_sd']['min']} - {f['coordinate_sd']['max']} "
          f"(median {f['coordinate_sd']['median']}); largest |value| {f['largest_abs_value']}")
    print(f"  distance to the nearest other person (median, the 'spacing'): {f['spacing']}; "
          f"mean pairwise distance {f['mean_pairwise_distance']}")
    print("  variance explained by the principal directions: "
          + ", ".join(f"PC{i + 1} {e:.1%}" for i, e in enumerate(f["explained"])))
    print("  single-coordinate sweeps of every training person, at both ends of the range:")
    print("    reach = distance to the nearest training person / spacing (<= ~1: among the data)")
    for w in f["walks"]:
        print(f"    {w['range']:<34} within the coordinate's training range "
              f"{w['ends_within_training_range']:.1%}; reach median {w['reach_median']}, "
              f"95th percentile {w['reach_p95']}, max {w['reach_max']}")
