"""The identity space: spreads, principal directions and walks measured on the data."""
import numpy as np
import pytest

from core.identity_space import IdentitySpace
from core.metrics import euclidean_distances


@pytest.fixture
def table():
    # 200 persons in 6 dimensions, with very different spreads per axis and correlated axes.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 6)) * np.array([0.05, 0.03, 0.02, 0.01, 0.005, 0.001])
    mix = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    return base @ mix + 0.1


def test_directions_are_orthonormal_and_their_variances_sum_to_the_total(table):
    space = IdentitySpace(table)
    assert space.directions.shape == (6, 6)
    np.testing.assert_allclose(space.directions @ space.directions.T, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(space.variances.sum(), table.var(0).sum(), rtol=1e-10)
    np.testing.assert_allclose(space.total_variance, table.var(0).sum(), rtol=1e-12)
    np.testing.assert_allclose(space.explained.sum(), 1.0)
    assert np.all(np.diff(space.variances) <= 0)  # largest first
    # Each variance is the persons' variance along that direction.
    along = (table - table.mean(0)) @ space.directions.T
    np.testing.assert_allclose(along.var(0), space.variances, rtol=1e-10)
    # The spreads the data was built with come back (the mix is a rotation).
    np.testing.assert_allclose(np.sqrt(space.variances),
                               [0.05, 0.03, 0.02, 0.01, 0.005, 0.001], rtol=0.15)


def test_directions_are_the_same_for_the_same_table(table):
    a, b = IdentitySpace(table), IdentitySpace(table.copy())
    np.testing.assert_array_equal(a.directions, b.directions)
    # Sign convention: each direction's largest component is positive.
    assert np.all(a.directions[np.arange(6), np.abs(a.directions).argmax(1)] > 0)


def test_walking_zero_standard_deviations_stays_on_the_identity(table):
    space = IdentitySpace(table)
    v = table[3]
    walk = space.along_direction(v, 1, [-2.0, 0.0, 1.5])
    np.testing.assert_array_equal(walk[1], v)
    np.testing.assert_allclose(np.linalg.norm(walk[0] - v), 2.0 * np.sqrt(space.variances[1]))
    np.testing.assert_allclose(np.linalg.norm(walk[2] - v), 1.5 * np.sqrt(space.variances[1]))
    # The walk moves along direction 2 only.
    moved = (walk - v) @ space.directions.T
    np.testing.assert_allclose(np.delete(moved, 1, axis=1), 0.0, atol=1e-12)


def test_coordinate_walks_are_in_that_coordinates_standard_deviations(table):
    space = IdentitySpace(table)
    v = table[5]
    sd = table.std(0)
    np.testing.assert_allclose(space.coordinate_values(v, 2, [-3, 0, 3]), v[2] + np.array([-3, 0, 3]) * sd[2])
    np.testing.assert_allclose(space.coordinate_values(v, 2, [-3, 3], around="mean"),
                               table[:, 2].mean() + np.array([-3, 3]) * sd[2])
    rows = space.along_coordinate(v, 4, [-1, 1])
    np.testing.assert_array_equal(np.delete(rows, 4, axis=1), np.delete(np.stack([v, v]), 4, axis=1))
    np.testing.assert_allclose(rows[:, 4], v[4] + np.array([-1, 1]) * sd[4])
    # Mean +- 3 sd stays within the data's range far better than the paper's absolute +-0.3.
    lo, hi = space.coordinate_values(v, 0, [-3, 3], around="mean")
    assert table[:, 0].min() - 0.01 < lo and hi < table[:, 0].max() + 0.01


def test_projection_and_neighbours(table):
    space = IdentitySpace(table)
    xy = space.coordinates(table, 2)
    np.testing.assert_allclose(xy.var(0), space.variances[:2], rtol=1e-10)
    rows, d = space.nearest(table[7], 3)
    assert rows[0] == 7 and d[0] == pytest.approx(0.0, abs=1e-6)
    rows, _ = space.nearest(table[7], 3, exclude=7)
    assert 7 not in rows and len(rows) == 3
    spacing = space.nearest_distances()
    assert spacing.shape == (200,) and np.all(spacing > 0)
    assert spacing[7] == pytest.approx(np.linalg.norm(np.delete(table, 7, 0) - table[7], axis=1).min())


def test_pairs_and_distance_to_the_nearest_person(table):
    space = IdentitySpace(table)
    brute = np.sqrt(((table[:, None] - table[None]) ** 2).sum(-1))
    np.testing.assert_allclose(space.pairwise_distances(), brute, atol=1e-6)
    distances, closest, farthest = space.pairs()
    assert len(distances) == 200 * 199 // 2
    i, j, d = closest
    assert i < j and d == distances.min() and d == pytest.approx(brute[i, j])
    i, j, d = farthest
    assert i < j and d == distances.max() and d == pytest.approx(brute[i, j])
    # The persons themselves (first) are not their own nearest; other vectors are just measured.
    others = table[:3] + 0.01
    near = space.distance_to_nearest(np.concatenate([table, others]), own_rows=200)
    np.testing.assert_allclose(near[:200], space.nearest_distances())
    np.testing.assert_allclose(near[200:], euclidean_distances(others, table).min(1))
    single = IdentitySpace(table[:1])
    assert single.pairs()[1:] == (None, None) and len(single.pairs()[0]) == 0
    assert single.distance_to_nearest(table[:1], own_rows=1)[0] < 1e-6  # nobody else to compare


def test_coordinate_grid_in_standard_deviations_or_absolute(table):
    space = IdentitySpace(table)
    v, steps = table[4], np.linspace(-2, 2, 5)
    grid = space.coordinate_grid(v, steps)  # sd around the mean
    assert grid.shape == (6, 5)
    for c in range(6):
        np.testing.assert_allclose(grid[c], space.coordinate_values(v, c, steps, "mean"))
        np.testing.assert_allclose(space.coordinate_grid(v, steps, around="identity")[c],
                                   space.coordinate_values(v, c, steps, "identity"))
    np.testing.assert_array_equal(space.coordinate_grid(v, steps, "absolute"), np.tile(steps, (6, 1)))
    np.testing.assert_allclose(space.coordinate_grid(v, steps, "absolute", "identity"),
                               v[:, None] + steps[None])
    with pytest.raises(ValueError, match="units"):
        space.coordinate_grid(v, steps, "percent")


def test_bad_input_is_refused_clearly(table):
    space = IdentitySpace(table)
    with pytest.raises(ValueError, match="principal directions are 1..6"):
        space.along_direction(table[0], 6, [1.0])
    with pytest.raises(ValueError, match="coordinates are 0..5"):
        space.coordinate_values(table[0], -1, [1.0])
    with pytest.raises(ValueError, match="around"):
        space.coordinate_values(table[0], 0, [1.0], around="zero")
    with pytest.raises(ValueError, match="persons, dimensions"):
        IdentitySpace(np.zeros(5))


def test_a_single_person_has_no_spread():
    space = IdentitySpace(np.full((1, 4), 0.2))
    assert space.total_variance == 0.0
    np.testing.assert_array_equal(space.explained, np.zeros(space.num_directions))
    np.testing.assert_array_equal(space.along_direction(np.full(4, 0.2), 0, [3.0])[0], np.full(4, 0.2))


def test_sweep_ends_reach_and_range(table):
    space = IdentitySpace(table)
    n, dim = table.shape
    ends = space.sweep_ends(-3, 3, "sd", "mean")
    assert ends.shape == (n * dim * 2, dim)
    first = ends.reshape(n, dim, 2, dim)[0]
    for c in range(dim):  # only coordinate c moves, to mean -/+ 3 sd; the rest is the person
        np.testing.assert_allclose(first[c, :, c], space.mean[c] + np.array([-3, 3]) * space.std[c])
        others = np.delete(np.arange(dim), c)
        np.testing.assert_array_equal(first[c][:, others], np.repeat(table[0, others][None], 2, 0))
    around = space.sweep_ends(-1, 1, "absolute", "identity").reshape(n, dim, 2, dim)
    np.testing.assert_allclose(around[5, 2, :, 2], table[5, 2] + np.array([-1, 1]))
    # The persons themselves are among the data: reach 0, within range; far walks are not.
    assert np.all(space.reach(table) < 1e-5) and space.within_range(table).all()
    far = space.sweep_ends(-0.3, 0.3, "absolute", "mean")  # ~6-300 sd on these axes
    assert np.median(space.reach(far)) > 2 * np.median(space.reach(ends))
    assert not space.within_range(far).any()
    np.testing.assert_allclose(space.spacing(), np.median(space.nearest_distances()))
    with pytest.raises(ValueError, match="units"):
        space.sweep_ends(-1, 1, "percent")


def test_genreid_space_describes_the_table(table):
    from core.cli_space import describe

    figures = describe(table, directions=3)
    assert figures["persons"] == 200 and figures["dimensions"] == 6
    assert len(figures["explained"]) == 3
    assert figures["explained"] == sorted(figures["explained"], reverse=True)
    sd_mean, _, absolute_mean, _ = figures["walks"]
    assert sd_mean["range"] == "±3 sd around the mean"
    assert absolute_mean["reach_median"] > sd_mean["reach_median"]
    assert absolute_mean["ends_within_training_range"] == 0.0
