"""The identity space: the training persons' identity vectors (the generator's table) seen as
data. Where each coordinate lives, the principal directions along which persons differ, the
nearest persons to a vector, and walks along a coordinate or a direction in units of the data's
own spread.

Why units of the data: the paper swept coordinates over an absolute range (-0.3 to 0.3) that
fitted its identity space. Spreads differ from one trained table to another (in the shipped
set a coordinate's standard deviation over the training persons is 0.02-0.045), so a range in
standard deviations stays on the data wherever the table came from.

    space = IdentitySpace(model.table_identities(np.arange(model.num_identities)))
    space.explained[:4]                                  # share of variance of the first 4 directions
    vectors = space.along_direction(v, 0, [-2, 0, 2])    # v moved by -2, 0, +2 sd along direction 1
"""

from __future__ import annotations

import numpy as np

from .metrics import euclidean_distances


class IdentitySpace:
    def __init__(self, table: np.ndarray):
        table = np.asarray(table, np.float64)
        if table.ndim != 2 or len(table) < 1:
            raise ValueError(f"an identity table is (persons, dimensions); got shape {table.shape}")
        self.table = table
        self.dim = table.shape[1]
        self.mean = table.mean(0)
        self.std = table.std(0)  # over persons (population deviation, as the variances below)
        # Principal directions: the right singular vectors of the centred table. Each row of
        # `directions` is a unit vector; `variances[k]` is the persons' variance along row k,
        # so the variances sum to the table's total variance (the sum of coordinate variances).
        _, s, vt = np.linalg.svd(table - self.mean, full_matrices=False)
        # An SVD's signs are arbitrary: make each direction's largest component positive, so the
        # same table always gives the same directions.
        flip = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
        self.directions = vt * np.where(flip == 0, 1.0, flip)[:, None]
        self.variances = s ** 2 / len(table)
        self.total_variance = float((self.std ** 2).sum())
        self._pairwise: np.ndarray | None = None

    # ------------------------------------------------------------------ description
    @property
    def num_directions(self) -> int:
        return len(self.directions)

    @property
    def explained(self) -> np.ndarray:
        """Share of the total variance along each principal direction (sums to 1)."""
        if self.total_variance <= 0:
            return np.zeros(self.num_directions)
        return self.variances / self.total_variance

    def direction_std(self, k: int) -> float:
        self._check_direction(k)
        return float(np.sqrt(self.variances[k]))

    def coordinates(self, vectors: np.ndarray, k: int = 2) -> np.ndarray:
        """Coordinates of vectors along the first k principal directions (the PCA projection)."""
        k = min(k, self.num_directions)
        out = (np.asarray(vectors, np.float64) - self.mean) @ self.directions[:k].T
        return np.pad(out, ((0, 0), (0, max(0, 2 - k)))) if k < 2 else out

    # ------------------------------------------------------------------ walks
    def coordinate_values(self, vector: np.ndarray, c: int, sds, around: str = "identity") -> np.ndarray:
        """Values of coordinate c at `sds` standard deviations (of that coordinate over the
        training persons) from the identity's own value (around="identity") or from the
        persons' mean (around="mean")."""
        self._check_coordinate(c)
        if around not in ("identity", "mean"):
            raise ValueError(f"a walk is around 'identity' or 'mean', not {around!r}")
        centre = float(vector[c]) if around == "identity" else float(self.mean[c])
        return centre + np.asarray(sds, np.float64) * self.std[c]

    def along_coordinate(self, vector: np.ndarray, c: int, sds, around: str = "identity") -> np.ndarray:
        """Copies of vector with coordinate c set to `coordinate_values` (one row per value)."""
        values = self.coordinate_values(vector, c, sds, around)
        out = np.repeat(np.asarray(vector, np.float64)[None], len(values), 0)
        out[:, c] = values
        return out

    def along_direction(self, vector: np.ndarray, k: int, sds) -> np.ndarray:
        """vector + s * sd_k * direction_k for each s in sds: 0 gives the vector itself."""
        step = self.direction_std(k) * self.directions[k]
        return np.asarray(vector, np.float64)[None] + np.asarray(sds, np.float64)[:, None] * step

    def direction_vector(self, k: int) -> np.ndarray:
        """Direction k as a unit vector in identity coordinates."""
        self._check_direction(k)
        return self.directions[k].copy()

    # ------------------------------------------------------------------ neighbours
    def nearest(self, vector: np.ndarray, k: int,
                exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, distances) of the k training persons nearest to vector, nearest first."""
        d = euclidean_distances(np.asarray(vector, np.float64)[None], self.table)[0]
        if exclude is not None:
            d[exclude] = np.inf
        order = np.argsort(d, kind="stable")[:k]
        order = order[np.isfinite(d[order])]
        return order, d[order]

    def pairwise_distances(self) -> np.ndarray:
        """(persons, persons): every distance between two training persons, computed once."""
        if self._pairwise is None:
            self._pairwise = euclidean_distances(self.table, self.table)
        return self._pairwise

    def pairs(self) -> tuple[np.ndarray, tuple[int, int, float] | None, tuple[int, int, float] | None]:
        """(the distance of every pair of training persons, each pair once; the closest pair
        (row i, row j, distance); the farthest pair), the pairs None with a single person."""
        n = len(self.table)
        iu = np.triu_indices(n, k=1)
        distances = self.pairwise_distances()[iu]
        if not len(distances):
            return distances, None, None
        lo, hi = int(np.argmin(distances)), int(np.argmax(distances))
        return (distances, (int(iu[0][lo]), int(iu[1][lo]), float(distances[lo])),
                (int(iu[0][hi]), int(iu[1][hi]), float(distances[hi])))

    def nearest_distances(self) -> np.ndarray:
        """Each training person's distance to its nearest other person (the spacing of the data)."""
        if len(self.table) < 2:
            return np.zeros(len(self.table))
        d = self.pairwise_distances().copy()
        np.fill_diagonal(d, np.inf)
        return d.min(1)

    def distance_to_nearest(self, vectors: np.ndarray, own_rows: int = 0) -> np.ndarray:
        """Each vector's distance to its nearest training person. The first own_rows vectors are
        the training persons themselves (rows 0..own_rows-1): with more than one person, a
        person is not its own nearest."""
        d = euclidean_distances(vectors, self.table)
        n = min(own_rows, len(d))
        if n > 1:
            d[np.arange(n), np.arange(n)] = np.inf
        return d.min(1)

    def spacing(self) -> float:
        """The median distance from a training person to its nearest other person."""
        return float(np.median(self.nearest_distances()))

    def reach(self, vectors: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Each vector's distance to its nearest training person, in units of `spacing()`: about
        1 or less is among the data; much more is where no training person lives."""
        vectors = np.asarray(vectors, np.float64)
        d = np.concatenate([euclidean_distances(vectors[i:i + chunk], self.table).min(1)
                            for i in range(0, len(vectors), chunk)]) if len(vectors) else np.zeros(0)
        return d / max(self.spacing(), 1e-12)

    def coordinate_grid(self, vector: np.ndarray, steps, units: str = "sd",
                        around: str = "mean") -> np.ndarray:
        """(dimensions, len(steps)): the values each coordinate takes when swept over steps.
        units "sd": steps in standard deviations around the persons' mean (around="mean") or the
        vector's own value ("identity"); units "absolute": the coordinate set to each step
        ("mean"), or moved by it ("identity"), as the paper's -0.3 to 0.3."""
        if units not in ("sd", "absolute"):
            raise ValueError(f"units are 'sd' or 'absolute', not {units!r}")
        if around not in ("identity", "mean"):
            raise ValueError(f"a walk is around 'identity' or 'mean', not {around!r}")
        vector, s = np.asarray(vector, np.float64), np.asarray(steps, np.float64)
        if units == "sd":
            centre = vector if around == "identity" else self.mean
            return centre[:, None] + self.std[:, None] * s[None]
        return (vector[:, None] if around == "identity" else np.zeros((self.dim, 1))) + s[None]

    def sweep_ends(self, low: float, high: float, units: str = "sd", around: str = "mean") -> np.ndarray:
        """The two ends of every single-coordinate sweep of every training person: (persons x
        dimensions x 2, dimensions). units "sd": low/high in standard deviations around the
        persons' mean (around="mean") or each person's own value ("identity"); units "absolute":
        the coordinate set to low/high (around="mean"), or moved by them ("identity"), as the
        paper's -0.3 to 0.3."""
        if units not in ("sd", "absolute"):
            raise ValueError(f"units are 'sd' or 'absolute', not {units!r}")
        if around not in ("identity", "mean"):
            raise ValueError(f"a walk is around 'identity' or 'mean', not {around!r}")
        n, dim = self.table.shape
        ends = np.repeat(self.table[:, None, None], dim, 1).repeat(2, 2)  # (n, D, 2, D)
        steps = np.array([low, high], np.float64)
        for c in range(dim):
            scale = self.std[c] if units == "sd" else 1.0
            centre = self.table[:, c:c + 1] if around == "identity" else (
                self.mean[c] if units == "sd" else 0.0)
            ends[:, c, :, c] = centre + steps[None] * scale
        return ends.reshape(-1, dim)

    def within_range(self, vectors: np.ndarray) -> np.ndarray:
        """Per vector: whether every coordinate lies within the training persons' [min, max]."""
        vectors = np.asarray(vectors, np.float64)
        return ((vectors >= self.table.min(0)) & (vectors <= self.table.max(0))).all(1)

    # ------------------------------------------------------------------ checks
    def _check_coordinate(self, c: int) -> None:
        if not 0 <= c < self.dim:
            raise ValueError(f"coordinates are 0..{self.dim - 1}; got {c}")

    def _check_direction(self, k: int) -> None:
        if not 0 <= k < self.num_directions:
            raise ValueError(f"principal directions are 1..{self.num_directions}; got {k + 1}")
