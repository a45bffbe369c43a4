import numpy as np
import pytest
import torch
from geopy.distance import great_circle

from geoae.geo import EARTH_RADIUS_KM, haversine_km, haversine_km_torch, median_point, valid_coordinates


def _random_pairs(n=500, seed=0):
    rng = np.random.default_rng(seed)
    lat1, lat2 = rng.uniform(-89, 89, (2, n))
    lon1, lon2 = rng.uniform(-180, 180, (2, n))
    return lat1, lon1, lat2, lon2


def test_radius_matches_geopy():
    from geopy.distance import EARTH_RADIUS

    assert EARTH_RADIUS_KM == pytest.approx(EARTH_RADIUS)


def test_haversine_matches_geopy_great_circle():
    lat1, lon1, lat2, lon2 = _random_pairs()
    d = haversine_km(lat1, lon1, lat2, lon2)
    ref = np.array([great_circle((a, b), (c, e)).km for a, b, c, e in zip(lat1, lon1, lat2, lon2)])
    np.testing.assert_allclose(d, ref, rtol=1e-6)
    # a few short distances too (city scale)
    lat3, lon3 = lat1 + 0.01, lon1 - 0.02
    d = haversine_km(lat1, lon1, lat3, lon3)
    ref = np.array([great_circle((a, b), (c, e)).km for a, b, c, e in zip(lat1, lon1, lat3, lon3)])
    np.testing.assert_allclose(d, ref, rtol=1e-6)


def test_haversine_broadcasts_and_handles_nan_and_zero():
    d = haversine_km(40.0, -74.0, np.array([40.0, 41.0, np.nan]), np.array([-74.0, -74.0, 0.0]))
    assert d.shape == (3,)
    assert d[0] == 0.0
    assert d[1] == pytest.approx(111.195, rel=1e-4)
    assert np.isnan(d[2])
    # antipode
    assert haversine_km(0, 0, 0, 180) == pytest.approx(np.pi * EARTH_RADIUS_KM)


def test_torch_matches_numpy():
    lat1, lon1, lat2, lon2 = _random_pairs(200, seed=1)
    ref = haversine_km(lat1, lon1, lat2, lon2)
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        t = [torch.tensor(x, dtype=dtype) for x in (lat1, lon1, lat2, lon2)]
        np.testing.assert_allclose(haversine_km_torch(*t).numpy(), ref, rtol=rtol, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_gradient_finite_at_zero_distance_and_antipode(dtype):
    lat = torch.tensor([40.0, 10.0, 0.0, 33.3], dtype=dtype, requires_grad=True)
    lon = torch.tensor([-74.0, 20.0, 0.0, -100.0], dtype=dtype, requires_grad=True)
    lat2 = torch.tensor([40.0, 10.0, 0.0, 35.0], dtype=dtype)
    lon2 = torch.tensor([-74.0, 20.0, 180.0, -101.0], dtype=dtype)
    d = haversine_km_torch(lat, lon, lat2, lon2)
    assert d[0].item() == 0.0 and d[1].item() == 0.0
    d.sum().backward()
    assert torch.isfinite(lat.grad).all() and torch.isfinite(lon.grad).all()
    # the ordinary point still gets a real gradient (moving north towards 35N shrinks the distance)
    assert lat.grad[3].item() < 0


def test_torch_gradient_matches_finite_difference():
    lat = torch.tensor([30.0], dtype=torch.float64, requires_grad=True)
    lon = torch.tensor([-90.0], dtype=torch.float64)
    d = haversine_km_torch(lat, lon, torch.tensor([31.0], dtype=torch.float64), torch.tensor([-92.0], dtype=torch.float64))
    d.backward()
    h = 1e-6
    fd = (haversine_km(30.0 + h, -90.0, 31.0, -92.0) - haversine_km(30.0 - h, -90.0, 31.0, -92.0)) / (2 * h)
    assert lat.grad.item() == pytest.approx(float(fd), rel=1e-5)


def test_valid_coordinates():
    lat = np.array([0.0, 90.0, -90.5, np.nan, 45.0, 45.0, np.inf])
    lon = np.array([0.0, 180.0, 0.0, 0.0, 181.0, -180.0, 0.0])
    assert valid_coordinates(lat, lon).tolist() == [True, True, False, False, False, True, False]


def test_median_point_is_coordinatewise_and_ignores_invalid():
    lat = [1.0, 2.0, 10.0, np.nan]
    lon = [5.0, -3.0, 0.0, 0.0]
    assert median_point(lat, lon) == (2.0, 0.0)
    assert all(np.isnan(v) for v in median_point([np.nan], [np.nan]))


def test_median_point_of_points_straddling_the_antimeridian_stays_among_them():
    # Anchorage and Attu (173 E): the plain median longitude, 11.6, is in Europe
    lat, lon = median_point([61.22, 52.85], [-149.9, 173.1])
    assert lon == pytest.approx(-168.4) and haversine_km(lat, lon, 61.22, -149.9) < 2000
    assert median_point([52.0, 52.0, 52.0], [179.0, -179.0, -178.0]) == (52.0, -179.0)
    assert abs(median_point([52.0, 52.0], [179.0, -179.0])[1]) == 180.0
    # a set on one side of the globe (the contiguous US) keeps the plain median
    lat, lon = [40.7, 34.0, 29.8, 47.6], [-74.0, -118.2, -95.4, -122.3]
    assert median_point(lat, lon) == (float(np.median(lat)), float(np.median(lon)))


# --------------------------------------------------------------------------- LocationRisk

from geoae.geo import LocationRisk  # noqa: E402

# Two Californian metros 560 km apart (LA has more users), one user in Fresno between them, and New York.
_LA, _SF, _NY, _FRESNO = (34.05, -118.24), (37.77, -122.42), (40.71, -74.01), (36.74, -119.79)


def _users():
    pts = [_LA] * 5 + [_FRESNO] + [_SF] * 4 + [_NY] * 5
    states = ["CA"] * 10 + ["NY"] * 5
    lat, lon = np.array(pts).T
    return lat, lon, states


def test_location_risk_picks_the_denser_metro_not_the_state_median():
    lat, lon, states = _users()
    r = LocationRisk(cap_km=161).fit(lat, lon, states, ["CA", "NY"])
    # Sure of California: the least expected error is Los Angeles itself (5 of 10 users).
    np.testing.assert_allclose(r.points(np.array([[1.0, 0.0]])), [_LA], atol=0.06)
    # The state-median rule would put it in between, >150 km from both cities.
    med = median_point(lat[:10], lon[:10])
    assert haversine_km(med[0], med[1], *_LA) > 150 and haversine_km(med[0], med[1], *_SF) > 150
    np.testing.assert_allclose(r.points(np.array([[0.0, 1.0]])), [_NY], atol=0.06)


def test_location_risk_mass_is_each_class_share_per_cell():
    lat, lon, states = _users()
    r = LocationRisk(cap_km=300).fit(lat, lon, states, ["CA", "NY", "TX"])
    assert r.mass_.shape == (3, len(r.candidates_)) == (3, 4)
    la = np.argmin(haversine_km(r.candidates_[:, 0], r.candidates_[:, 1], *_LA))
    assert r.mass_[0, la] == pytest.approx(0.5)
    np.testing.assert_allclose(r.mass_.sum(axis=1), [1.0, 1.0, 0.0])  # no Texan user
    # Expected capped error of each candidate, by hand, for a user surely Californian.
    ca_users = np.c_[lat[:10], lon[:10]]
    risk = [np.minimum(haversine_km(a, b, ca_users[:, 0], ca_users[:, 1]), 300).mean() for a, b in r.candidates_]
    np.testing.assert_allclose(r.points(np.array([[1.0, 0.0, 0.0]])), [r.candidates_[int(np.argmin(risk))]])


def test_location_risk_coordinate_kernel_picks_the_side_the_regression_points_to():
    lat, lon, states = _users()
    r = LocationRisk(cap_km=500).fit(lat, lon, states, ["CA", "NY"])
    unsure = np.array([[0.5, 0.5], [0.5, 0.5]])
    east, west = np.array(_NY) + [1.0, -2.0], np.array(_SF) + [0.0, 1.0]
    got = r.points(unsure, np.array([east, west]), tau_km=500)
    assert haversine_km(got[0, 0], got[0, 1], *_NY) < 50
    assert haversine_km(got[1, 0], got[1, 1], *_SF) < 50
    # A NaN coordinate falls back to the state head alone instead of failing.
    np.testing.assert_allclose(r.points(unsure[:1], np.array([[np.nan, np.nan]]), tau_km=500), r.points(unsure[:1]))


def test_location_risk_round_trips_and_bounds_candidates():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(30, 45, 300), rng.uniform(-120, -75, 300)
    r = LocationRisk(max_candidates=50).fit(lat, lon, ["A"] * 300, ["A"])
    assert r.candidates_.shape == (50, 2)
    assert r.mass_.sum() == pytest.approx(1.0)  # users of dropped cells moved, not lost
    p = rng.dirichlet([1.0], size=7)
    back = LocationRisk.from_arrays(r.candidates_, r.mass_, r.cap_km)
    np.testing.assert_array_equal(back.points(p), r.points(p))
    with pytest.raises(ValueError, match="do not fit"):
        LocationRisk.from_arrays(r.candidates_, r.mass_[:, :3], 500)
    with pytest.raises(ValueError, match="no training user"):
        LocationRisk().fit([np.nan], [0.0], ["A"], ["A"])
    with pytest.raises(RuntimeError, match="not fitted"):
        LocationRisk().points(np.ones((1, 1)))


def test_location_risk_without_kernel_is_the_two_step_risk_and_refits_cleanly():
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(25, 48, 2000), rng.uniform(-124, -68, 2000)
    states = np.array(list("ABCDE"))[rng.integers(0, 5, 2000)]
    r = LocationRisk(cap_km=500).fit(lat, lon, states, list("ABCDE"))
    p = rng.dirichlet(np.full(5, 0.5), size=600)
    loss = np.minimum(haversine_km(r.candidates_[:, None, 0], r.candidates_[:, None, 1],
                                   r.candidates_[None, :, 0], r.candidates_[None, :, 1]), 500)
    two_step = r.candidates_[np.argmin((p @ r.mass_) @ loss, axis=1)]
    np.testing.assert_array_equal(r.points(p), two_step)
    np.testing.assert_array_equal(r.points(p, None, tau_km=500), two_step)  # no coordinates: no kernel
    # A second fit on other users must not reuse the first fit's cached risks.
    r.fit(lat[:50] + 1.0, lon[:50], states[:50], list("ABCDE"))
    assert set(map(tuple, r.points(p))) <= set(map(tuple, r.candidates_))
