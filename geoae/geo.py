"""Great-circle geometry shared by labelling, the coordinate head and evaluation.

Everything here works on degrees and returns kilometres on a sphere of mean
radius ``EARTH_RADIUS_KM`` (the IUGG mean radius that ``geopy``'s
``great_circle`` uses), so distances reported by evaluation agree with the
numbers in the literature, which are great-circle distances, not geodesics on
the ellipsoid.

Two implementations of the same formula exist on purpose: ``haversine_km`` for
numpy arrays (evaluation, labelling) and ``haversine_km_torch`` for the training
loss, which must be differentiable *everywhere*, including at zero distance
(a model that predicts a user's exact point must not produce NaN gradients).
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), the value ``geopy.distance.great_circle`` uses."""

# Below this value of the haversine term ``a`` (about 1e-7 km at the surface),
# the torch version treats the distance as 0 and stops the gradient, because
# d sqrt(a)/da is unbounded at a = 0 (0 * inf = NaN in the backward pass).
_TORCH_A_EPS = 1e-20


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points given in degrees.

    Arguments broadcast like numpy arrays, so one point against many, or pairs
    row by row, both work. Uses the ``atan2`` form of the haversine formula,
    which stays accurate for both tiny and near-antipodal distances (the
    ``asin`` form loses precision near the antipode). NaN in, NaN out.
    """
    lat1 = np.radians(np.asarray(lat1, dtype=np.float64))
    lon1 = np.radians(np.asarray(lon1, dtype=np.float64))
    lat2 = np.radians(np.asarray(lat2, dtype=np.float64))
    lon2 = np.radians(np.asarray(lon2, dtype=np.float64))
    sdlat = np.sin((lat2 - lat1) * 0.5)
    sdlon = np.sin((lon2 - lon1) * 0.5)
    a = sdlat * sdlat + np.cos(lat1) * np.cos(lat2) * sdlon * sdlon
    a = np.clip(a, 0.0, 1.0)
    return 2.0 * EARTH_RADIUS_KM * np.arctan2(np.sqrt(a), np.sqrt(1.0 - a))


def haversine_km_torch(lat1, lon1, lat2, lon2):
    """Differentiable great-circle distance in km (torch tensors, degrees).

    Same formula and broadcasting as :func:`haversine_km`. Numerically safe
    for training: ``a`` is clamped to [0, 1] and both square roots are taken
    through the "double where" trick, so the gradient is finite (zero) when a
    prediction coincides with its target and at the antipode, where the
    derivative of ``sqrt`` is unbounded.
    """
    import torch

    deg = torch.pi / 180.0
    lat1 = lat1 * deg
    lat2 = lat2 * deg
    dlat = (lat2 - lat1) * 0.5
    dlon = (lon2 - lon1) * (0.5 * deg)
    sdlat = torch.sin(dlat)
    sdlon = torch.sin(dlon)
    a = sdlat * sdlat + torch.cos(lat1) * torch.cos(lat2) * sdlon * sdlon
    a = torch.clamp(a, 0.0, 1.0)
    b = 1.0 - a
    a_ok = a > _TORCH_A_EPS
    b_ok = b > _TORCH_A_EPS
    sqrt_a = torch.where(a_ok, torch.sqrt(torch.where(a_ok, a, torch.ones_like(a))), torch.zeros_like(a))
    sqrt_b = torch.where(b_ok, torch.sqrt(torch.where(b_ok, b, torch.ones_like(b))), torch.zeros_like(b))
    return 2.0 * EARTH_RADIUS_KM * torch.atan2(sqrt_a, sqrt_b)


def valid_coordinates(lat, lon) -> np.ndarray:
    """Boolean mask of usable points: finite, |lat| <= 90 and |lon| <= 180.

    Anything else (NaN for an unknown location, 0/0 placeholders are *not*
    caught here, swapped or projected coordinates) cannot be labelled and is
    treated as "no coordinates" by the callers.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)


def median_point(lat, lon) -> tuple[float, float]:
    """Coordinate-wise median ``(median(lat), median(lon))`` of the valid points.

    This is the protocol's "median location" (e.g. the constant baseline that
    predicts the training users' median point, and the per-state centroid used
    when a model predicts only a state): the median latitude and the median
    longitude taken *independently*, not the geometric median that minimises
    the sum of great-circle distances. It is cheap, deterministic, robust to
    outliers and what the GeoText baselines report. It is fine for points
    within the contiguous US (nowhere near the antimeridian); it is not
    meaningful for sets that straddle longitude +-180. Invalid points are
    ignored; with no valid point the result is ``(nan, nan)``.
    """
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    ok = valid_coordinates(lat, lon)
    if not ok.any():
        return float("nan"), float("nan")
    return float(np.median(lat[ok])), float(np.median(lon[ok]))


def bayes_point_index(probs: np.ndarray, points: np.ndarray, cap_km: float | None = None) -> np.ndarray:
    """Index of the candidate point with the least *expected* great-circle error.

    ``probs`` [n, C] is a distribution over classes whose representative points
    are ``points`` [C, 2] (lat, lon). For each row this returns
    ``argmin_j sum_c probs[c] * min(d(points[j], points[c]), cap_km)``: the
    minimum-Bayes-risk choice under (capped) distance loss. Without a cap it
    minimises the expected error (good for mean km); a cap of a few hundred km
    stops a far-away unlikely state from dragging the point to the middle of
    the country, which keeps Acc@161 at the arg-max level while still lowering
    the median. When the classifier is sure it is the arg-max
    class's point; when it hesitates between far-apart states (New York vs
    California) it moves to a point that hedges, which is what lowers mean and
    median error. Cost: one [n, C] x [C, C] product.
    """
    pts = np.asarray(points, dtype=np.float64)
    ok = np.isfinite(pts).all(axis=1)
    d = haversine_km(pts[:, None, 0], pts[:, None, 1], pts[None, :, 0], pts[None, :, 1])
    if cap_km is not None:
        d = np.minimum(d, cap_km)
    d[:, ~ok] = 0.0
    d[~ok, :] = 1e12  # a class without a point is never chosen (finite: 0 * inf would be NaN)
    risk = np.asarray(probs, dtype=np.float64) @ d.T
    return np.argmin(risk, axis=1)


class LocationRisk:
    """Minimum-Bayes-risk points over the training users' own locations.

    ``bayes_point_index`` represents each state by one point (its median), which throws away
    where inside a state the users live: California's median point lies between Los Angeles
    and San Francisco, near neither. Here the location of a user whose state distribution is
    ``p`` is modelled as the mixture ``sum_c p[c] * (uniform over the training users of state
    c)``, and the prediction is the candidate point ``x`` (a training location) with the least
    expected capped error ``sum_c p[c] * mean_{j in c} min(d(x, y_j), cap_km)``. The
    per-class risk of every candidate is precomputed at ``fit`` ([classes, candidates]), so
    scoring is one [n, C] x [C, M] product, as cheap as the state-point rule.

    Candidates are the training locations rounded to ``grid_deg`` (about 1 km), the
    ``max_candidates`` most populous of them; at most ``max_per_class`` users per class
    (a seeded sample) enter a class's risk, which bounds the work on large corpora.
    Fitted state: ``candidates_`` [M, 2] (lat, lon) and ``risk_`` [C, M] in km.
    """

    def __init__(self, cap_km: float | None = 500.0, grid_deg: float = 0.01, max_candidates: int = 4000,
                 max_per_class: int = 2000, seed: int = 0):
        self.cap_km = cap_km
        self.grid_deg = grid_deg
        self.max_candidates = max_candidates
        self.max_per_class = max_per_class
        self.seed = seed

    def fit(self, lat, lon, state, classes) -> "LocationRisk":
        lat = np.asarray(lat, dtype=np.float64).ravel()
        lon = np.asarray(lon, dtype=np.float64).ravel()
        state = np.asarray(state, dtype=object).ravel()
        index = {str(c): i for i, c in enumerate(classes)}
        cls = np.array([index.get(str(s), -1) for s in state], dtype=np.int64)
        ok = valid_coordinates(lat, lon) & (cls >= 0)
        if not ok.any():
            raise ValueError("LocationRisk.fit: no training user has both valid coordinates and a known class")
        lat, lon, cls = lat[ok], lon[ok], cls[ok]
        cells, counts = np.unique(np.round(np.c_[lat, lon] / self.grid_deg).astype(np.int64), axis=0, return_counts=True)
        keep = np.argsort(-counts, kind="stable")[: self.max_candidates]
        cand = cells[np.sort(keep)] * self.grid_deg
        rng = np.random.default_rng(self.seed)
        risk = np.full((len(classes), len(cand)), 1e12)  # a class without users is never the likely one
        for c in range(len(classes)):
            members = np.flatnonzero(cls == c)
            if not len(members):
                continue
            if len(members) > self.max_per_class:
                members = np.sort(rng.choice(members, self.max_per_class, replace=False))
            d = haversine_km(cand[:, None, 0], cand[:, None, 1], lat[None, members], lon[None, members])
            if self.cap_km is not None:
                d = np.minimum(d, self.cap_km)
            risk[c] = d.mean(axis=1)
        self.candidates_ = cand
        self.risk_ = risk
        return self

    def points(self, probs: np.ndarray) -> np.ndarray:
        """The least-risk candidate [n, 2] for each row of class probabilities [n, C]."""
        if not hasattr(self, "risk_"):
            raise RuntimeError("LocationRisk is not fitted; call fit first")
        p = np.asarray(probs, dtype=np.float64)
        # Classes without users carry a huge risk; a zero probability must not turn it into NaN.
        return self.candidates_[np.argmin(p @ np.minimum(self.risk_, 1e9), axis=1)]
