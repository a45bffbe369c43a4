"""Great-circle geometry shared by labelling, the coordinate head and evaluation.

Everything here works on degrees and returns kilometres on a sphere of mean
radius ``EARTH_RADIUS_KM`` (the IUGG mean radius, which ``geopy``'s
``great_circle`` rounds to 6371.009 km), so distances reported by evaluation agree with the
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
"""Mean Earth radius (IUGG); ``geopy.distance.great_circle`` uses it rounded to 6371.009 (3e-8 apart)."""

# Below this value of the haversine term ``a`` (2 R sqrt(a): about 1.3e-6 km at the surface),
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

    Anything else (NaN for an unknown location, swapped or projected
    coordinates) cannot be labelled and is treated as "no coordinates" by the
    callers. The 0/0 placeholder and swaps that stay within range pass this
    check; ``labels.add_labels`` catches them.
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
    outliers and what the GeoText baselines report. Longitudes are taken as
    circular: the circle is cut at the widest empty arc between the points, so
    a set that straddles +-180 (Alaska's Aleutians lie on both sides) gets a
    point among them, not one on the far side of the globe; for any set whose
    widest gap already spans +-180 (the contiguous US) this is the plain
    median. Invalid points are ignored; with no valid point the result is
    ``(nan, nan)``.
    """
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    ok = valid_coordinates(lat, lon)
    if not ok.any():
        return float("nan"), float("nan")
    return float(np.median(lat[ok])), _circular_median_lon(lon[ok])


def _circular_median_lon(lon: np.ndarray) -> float:
    """Median longitude with the circle cut at the widest gap between the points (result in [-180, 180])."""
    s = np.sort(lon)
    gaps = np.diff(s)
    wrap_gap = s[0] + 360.0 - s[-1]
    if not len(gaps) or wrap_gap >= gaps.max():
        return float(np.median(s))
    cut = int(np.argmax(gaps)) + 1  # the points east of the widest gap come first
    m = float(np.median(np.concatenate([s[cut:], s[:cut] + 360.0])))
    return m - 360.0 if m > 180.0 else m


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
    """Minimum-Bayes-risk points over where the training users actually are.

    ``bayes_point_index`` represents each state by one point (its median), which throws away
    where inside a state the users live. Here the training locations are binned into cells of
    ``grid_deg`` (0.1 deg, ~10 km; the ``max_candidates`` most populous cells, users of other
    cells go to the nearest kept one) and each class keeps its users' distribution over the
    cells (``mass_`` [C, M], rows sum to 1). A user's location distribution is then

        w(m) ~ sum_c p[c] * mass[c, m]                           (state head only), or
        w(m) ~ sum_c p[c] * mass[c, m] * exp(-d(r, m) / tau_km)  (with a coordinate estimate r,
                                                                   e.g. the SDAE's regression head)

    and the prediction is the cell with the least expected capped error
    ``sum_m' w(m') min(d(m, m'), cap_km)``. The kernel is how the coordinate head helps: the
    state head knows *which* states are likely, the regression head *which side of the country*
    the user writes from, and a far-away state the regression head rules out stops pulling the
    point. Fitted state: ``candidates_`` [M, 2] (lat, lon of cell centres) and ``mass_``.
    """

    def __init__(self, cap_km: float | None = 500.0, grid_deg: float = 0.1, max_candidates: int = 1500):
        self.cap_km = cap_km
        self.grid_deg = grid_deg
        self.max_candidates = max_candidates

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
        cells, cell_of, counts = np.unique(np.round(np.c_[lat, lon] / self.grid_deg).astype(np.int64), axis=0,
                                           return_inverse=True, return_counts=True)
        cell_of = cell_of.ravel()
        keep = np.sort(np.argsort(-counts, kind="stable")[: self.max_candidates])
        cand = cells[keep] * self.grid_deg
        if len(keep) < len(cells):  # users of dropped cells count at the nearest kept cell
            # In blocks of cells: a large corpus has many more cells than candidates.
            centres = cells * self.grid_deg
            nearest = np.concatenate([
                np.argmin(haversine_km(b[:, None, 0], b[:, None, 1], cand[None, :, 0], cand[None, :, 1]), axis=1)
                for b in np.array_split(centres, max(1, len(centres) // 4096 + 1))])
            cell_of = nearest[cell_of]
        else:
            cell_of = np.searchsorted(keep, cell_of)
        mass = np.zeros((len(classes), len(cand)))
        np.add.at(mass, (cls, cell_of), 1.0)
        mass /= np.maximum(mass.sum(axis=1, keepdims=True), 1.0)
        self.candidates_, self.mass_ = cand, mass
        return self

    @classmethod
    def from_arrays(cls, candidates: np.ndarray, mass: np.ndarray, cap_km: float | None) -> "LocationRisk":
        """A fitted instance from stored ``candidates_`` and ``mass_`` (model artifacts keep these)."""
        cand = np.asarray(candidates, dtype=np.float64)
        mass = np.asarray(mass, dtype=np.float64)
        if cand.ndim != 2 or cand.shape[1] != 2 or mass.ndim != 2 or mass.shape[1] != cand.shape[0]:
            raise ValueError(f"location arrays do not fit together: candidates {cand.shape}, mass {mass.shape}")
        out = cls(cap_km=cap_km)
        out.candidates_, out.mass_ = cand, mass
        return out

    def _cached(self) -> tuple[np.ndarray, np.ndarray]:
        """(capped loss between cells [M, M], unit vectors of the cells [M, 3]), built once per fit."""
        cached = self.__dict__.get("_cache")
        if cached is None or cached[0] is not self.candidates_:
            c = self.candidates_
            d = haversine_km(c[:, None, 0], c[:, None, 1], c[None, :, 0], c[None, :, 1])
            cached = (c, d if self.cap_km is None else np.minimum(d, self.cap_km), _unit_vectors(c[:, 0], c[:, 1]))
            self.__dict__["_cache"] = cached
        return cached[1], cached[2]

    def _class_risk(self) -> np.ndarray:
        """``mass_ @ loss`` [C, M]: each class's expected capped loss at every cell, built once per fit."""
        cached = self.__dict__.get("_class_risk_cache")
        if cached is None or cached[0] is not self.candidates_:
            cached = (self.candidates_, self.mass_ @ self._cached()[0])
            self.__dict__["_class_risk_cache"] = cached
        return cached[1]

    def points(self, probs: np.ndarray, coords: np.ndarray | None = None, tau_km: float | None = None,
               batch: int = 2048) -> np.ndarray:
        """The least-risk cell centre [n, 2] per row of class probabilities [n, C]
        (optionally sharpened by coordinate estimates [n, 2] with kernel width ``tau_km``)."""
        if not hasattr(self, "mass_"):
            raise RuntimeError("LocationRisk is not fitted; call fit first")
        p = np.asarray(probs, dtype=np.float64)
        out = np.empty((len(p), 2))
        if coords is None or not tau_km:
            # Without a kernel the weights are linear in p, so (p @ mass) @ loss = p @ (mass @ loss):
            # a [C, M] product per user instead of [M, M] (C ~ 50 states, M up to 1,500 cells).
            # Same cells as the two-step product on 18,950 cross-validation rows of the LR peer.
            risk_c = self._class_risk()
            for s in range(0, len(p), batch):
                out[s:s + batch] = self.candidates_[np.argmin(p[s:s + batch] @ risk_c, axis=1)]
            return out
        loss, cell_xyz = self._cached()
        for s in range(0, len(p), batch):  # bounded [batch, M] intermediates
            w = p[s:s + batch] @ self.mass_
            r = np.asarray(coords[s:s + batch], dtype=np.float64)
            # Great-circle distance as the angle between unit vectors: one [b, 3] x [3, M] product
            # instead of a haversine per pair (the same distance to well under a metre at 500 km).
            cos = np.clip(_unit_vectors(r[:, 0], r[:, 1]) @ cell_xyz.T, -1.0, 1.0)
            wk = w * np.exp(-(EARTH_RADIUS_KM / tau_km) * np.arccos(cos))
            # A coordinate estimate far from every likely cell (or NaN) must not erase the state head.
            good = np.isfinite(wk).all(axis=1) & (wk.sum(axis=1) > 0)
            w[good] = wk[good]
            out[s:s + batch] = self.candidates_[np.argmin(w @ loss, axis=1)]
        return out


def _unit_vectors(lat, lon) -> np.ndarray:
    """Points on the unit sphere [n, 3] for (lat, lon) in degrees."""
    la, lo = np.radians(np.asarray(lat, dtype=np.float64)), np.radians(np.asarray(lon, dtype=np.float64))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
