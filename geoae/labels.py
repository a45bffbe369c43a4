"""US state and Census region labels for points, computed offline.

Why polygons and not a geocoder: labels must be reproducible and available
without network access, and the state of a user is a property of the user's
coordinates, not of a free-text profile field. The boundaries are the US Census
cartographic boundary file ``cb_2016_us_state_500k`` shipped by the
``plotly-geo`` wheel, read with ``pyshp`` and queried with a shapely
``STRtree`` over the individual polygon parts (tight bounding boxes) followed
by a vectorised prepared point-in-polygon test: 100k points take well under a
second. The file is loaded lazily, once per process, never at import time.

The 500k file clips states to the shoreline (oceans and the Great Lakes are
outside every polygon), so tweets from piers, beaches, boats or with GPS jitter
over water would fall outside the US. Points outside every polygon are snapped
to the nearest state when that state's boundary is within ``snap_km``
(default 25 km, great-circle). Known limitation: the file has no Canadian or
Mexican land, so a point a few km across a land border (Windsor ON, Tijuana)
also snaps to the neighbouring US state; with 25 km, downtown Toronto and
Vancouver stay outside.

Only the 50 states and DC count as "the US" here; Puerto Rico and the other
territories are excluded from the polygons (and so have neither state nor
region), because the Census regions and the state-classification task cover
the 50 states + DC only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from geoae.errors import DataError, RecordLog
from geoae.geo import haversine_km, valid_coordinates
from geoae.tweets import is_missing

_log = logging.getLogger(__name__)

SHAPEFILE_NAME = "cb_2016_us_state_500k"

REGIONS: dict[str, tuple[str, ...]] = {
    "Northeast": ("CT", "ME", "MA", "NH", "RI", "VT", "NJ", "NY", "PA"),
    "Midwest": ("IL", "IN", "MI", "OH", "WI", "IA", "KS", "MN", "MO", "NE", "ND", "SD"),
    "South": (
        "DE", "DC", "FL", "GA", "MD", "NC", "SC", "VA", "WV",
        "AL", "KY", "MS", "TN", "AR", "LA", "OK", "TX",
    ),
    "West": ("AZ", "CO", "ID", "MT", "NV", "NM", "UT", "WY", "AK", "CA", "HI", "OR", "WA"),
}
"""The official four Census regions (region -> USPS codes); DC is in the South."""

STATE_REGION: dict[str, str] = {code: region for region, codes in REGIONS.items() for code in codes}
"""USPS code -> Census region, for the 50 states + DC (51 entries)."""

US_STATES: tuple[str, ...] = tuple(sorted(STATE_REGION))
"""The 51 labels (50 states + DC) in a fixed, sorted order: the class list of the state task."""

OUTSIDE_US_POLICIES = ("drop", "keep", "fail")

# Rough km per degree of latitude; used only to size the search box for snapping
# (the decision itself is made with great-circle distances).
_KM_PER_DEG = 111.19


def state_codes(values) -> np.ndarray:
    """State codes as an object array of stripped ``str``; missing ones (None, NaN, NA) as ``""``."""
    arr = np.asarray(values, dtype=object).ravel()
    return np.array(["" if is_missing(v) else str(v).strip() for v in arr], dtype=object)


def region_of(codes) -> np.ndarray:
    """Census region for each USPS code ("" for "", territories and unknown codes)."""
    arr = np.asarray(codes, dtype=object).ravel()
    return np.array([STATE_REGION.get(c, "") if isinstance(c, str) else "" for c in arr], dtype=object).astype(str)


def top_states_json(top: np.ndarray, prob: np.ndarray, classes: np.ndarray) -> list[str]:
    """``[[code, prob], ...]`` per row as JSON text, probabilities rounded to 6 decimals.

    Formatted directly (state codes are plain ASCII and ``repr`` of a float is what
    ``json.dumps`` writes), ~2.5x faster than one ``json.dumps`` call per user (1.9 against 4.6 µs
    for the top 3). The rounding is numpy's (scale, round half to even, unscale), done on the whole
    array at once; it can differ from Python's ``round`` in the sixth decimal only when a
    probability sits within ~1e-16 of a rounding midpoint.
    """
    head = [f'["{c}", ' for c in classes.tolist()]
    return ["[" + ", ".join(f"{head[j]}{p!r}]" for j, p in zip(row, prow)) + "]"
            for row, prow in zip(top.tolist(), np.round(prob.astype(np.float64), 6).tolist())]


def shapefile_path() -> Path:
    """Path of the bundled ``cb_2016_us_state_500k.shp`` (raises ``DataError`` if missing)."""
    try:
        base = resources.files("_plotly_geo") / "package_data"
    except ModuleNotFoundError:
        raise DataError(
            "the US state boundaries come from the 'plotly-geo' package, which is not installed; "
            "install it (pip install plotly-geo)"
        ) from None
    p = Path(str(base / f"{SHAPEFILE_NAME}.shp"))
    if not p.is_file():
        raise DataError(f"state boundary file not found: {p}; reinstall plotly-geo")
    return p


@dataclass
class _Boundaries:
    parts: np.ndarray  # shapely polygons (prepared), one per polygon part
    part_code: np.ndarray  # USPS code of each part
    tree: object  # shapely.STRtree over parts
    names: dict  # code -> state name


_CACHE: dict[str, _Boundaries] = {}
_LOCK = threading.Lock()


def _load_boundaries() -> _Boundaries:
    """Read the shapefile once per process (about 0.3 s) and build the tree."""
    with _LOCK:
        if "b" in _CACHE:
            return _CACHE["b"]
        import shapefile  # pyshp
        import shapely
        from shapely.geometry import shape

        path = shapefile_path()
        with shapefile.Reader(str(path)) as r:
            recs = r.records()
            shapes = r.shapes()
        codes, geoms, names = [], [], {}
        for rec, shp in zip(recs, shapes):
            code = rec["STUSPS"]
            if code not in STATE_REGION:  # PR, VI, GU, AS, MP
                continue
            names[code] = rec["NAME"]
            codes.append(code)
            geoms.append(shape(shp.__geo_interface__))
        missing = set(STATE_REGION) - set(codes)
        if missing:
            raise DataError(f"{path}: states missing from the boundary file: {sorted(missing)}")
        parts, owner = shapely.get_parts(np.array(geoms, dtype=object), return_index=True)
        shapely.prepare(parts)
        b = _Boundaries(
            parts=parts,
            part_code=np.array(codes, dtype=object)[owner],
            tree=shapely.STRtree(parts),
            names=dict(sorted(names.items())),
        )
        _log.debug("loaded %d state polygons (%d parts) from %s", len(geoms), len(parts), path)
        _CACHE["b"] = b
        return b


class StateLocator:
    """Maps points to USPS state codes with point-in-polygon plus coastal snapping.

    ``locate`` returns "" for invalid points and points outside the 50 states +
    DC (after snapping). After each call ``snapped_`` holds how many points were
    assigned by snapping rather than by containment; ``outside_`` how many valid
    points got "".
    """

    def __init__(self, snap_km: float = 25.0):
        if not snap_km >= 0:
            raise ValueError(f"snap_km must be >= 0, got {snap_km}")
        self.snap_km = float(snap_km)
        self.snapped_ = 0
        self.outside_ = 0

    @property
    def state_names(self) -> dict[str, str]:
        """USPS code -> state name ("NY" -> "New York"), for the 50 states + DC."""
        return dict(_load_boundaries().names)

    def locate(self, lat, lon) -> np.ndarray:
        """USPS code for each point (degrees); "" when invalid or outside the US."""
        import shapely

        lat = np.asarray(lat, dtype=np.float64).ravel()
        lon = np.asarray(lon, dtype=np.float64).ravel()
        if lat.shape != lon.shape:
            raise ValueError(f"lat and lon differ in length: {lat.shape} vs {lon.shape}")
        out = np.full(lat.shape, "", dtype=object)
        self.snapped_ = 0
        self.outside_ = 0
        ok = np.nonzero(valid_coordinates(lat, lon))[0]
        if len(ok) == 0:
            return out.astype(str)
        b = _load_boundaries()
        x, y = lon[ok], lat[ok]
        pi, gi = b.tree.query(shapely.points(x, y))  # bounding-box candidates
        hit = shapely.intersects_xy(b.parts[gi], x[pi], y[pi])  # prepared, vectorised
        pi, gi = pi[hit], gi[hit]
        # a point on a shared border may hit two states: keep the first match
        first, idx = np.unique(pi, return_index=True)
        out[ok[first]] = b.part_code[gi[idx]]
        missed = np.setdiff1d(np.arange(len(ok)), first, assume_unique=True)
        if len(missed) and self.snap_km > 0:
            codes = self._snap(b, x[missed], y[missed])
            out[ok[missed]] = codes
            self.snapped_ = int((codes != "").sum())
        self.outside_ = int(len(ok) - len(first) - self.snapped_)
        return out.astype(str)

    def _snap(self, b: _Boundaries, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Nearest state within ``snap_km`` for points outside every polygon.

        The search box is sized in degrees (wider in longitude away from the
        equator); among the candidate parts the planar nearest boundary point is
        found and the great-circle distance to it decides. Measuring to the
        planar-nearest point slightly overestimates the true distance, so a
        point right at the threshold may stay unsnapped; never the reverse.
        """
        import shapely

        dlat = self.snap_km / _KM_PER_DEG
        coslat = np.maximum(np.cos(np.radians(np.minimum(np.abs(y) + dlat, 89.0))), 0.05)
        dlon = np.minimum(dlat / coslat, 180.0)
        # A box over the antimeridian is also searched shifted by 360 deg (the Aleutians lie on both
        # sides): each query is a point (src, its x, possibly shifted) with its box.
        src = np.arange(len(x))
        east, west = np.flatnonzero(x + dlon > 180.0), np.flatnonzero(x - dlon < -180.0)
        src = np.concatenate([src, east, west])
        qx = np.concatenate([x, x[east] - 360.0, x[west] + 360.0])
        qy, qd = y[src], dlon[src]
        boxes = shapely.box(qx - qd, qy - dlat, qx + qd, qy + dlat)
        qi, gi = b.tree.query(boxes)
        res = np.full(len(x), "", dtype=object)
        if len(qi) == 0:
            return res
        pi = src[qi]
        pts = shapely.points(qx[qi], qy[qi])
        lines = shapely.shortest_line(b.parts[gi], pts)
        near = shapely.get_coordinates(shapely.get_point(lines, 0))
        d = haversine_km(y[pi], x[pi], near[:, 1], near[:, 0])
        within = d <= self.snap_km
        pi, gi, d = pi[within], gi[within], d[within]
        order = np.lexsort((d, pi))  # by point, then distance
        pi, gi = pi[order], gi[order]
        first, idx = np.unique(pi, return_index=True)
        res[first] = b.part_code[gi[idx]]
        return res


def _record(log_: RecordLog, reason: str, n: int, details: list[str]) -> None:
    """Count records removed by an explicit policy without raising.

    ``outside_us: drop`` is a deliberate choice, not a malformed record, so it
    must not trip ``on_bad_record: fail``; it is still counted in the log so the
    manifest shows how many users were removed and why.
    """
    if n <= 0:
        return
    log_.counts[reason] += n
    ex = log_.examples.setdefault(reason, [])
    for d in details[: max(0, log_.max_examples - len(ex))]:
        ex.append(f"{log_.source}: {d}" if log_.source else d)


def _out_of_range(lat: float, lon: float) -> str:
    """Which of a finite point's coordinates ``valid_coordinates`` refuses, and the range it is not in."""
    parts = (["latitude not in [-90, 90]"] if abs(lat) > 90.0 else []) + (
        ["longitude not in [-180, 180]"] if abs(lon) > 180.0 else [])
    return " and ".join(parts)


def add_labels(
    docs: pd.DataFrame,
    *,
    outside_us: str = "drop",
    log: RecordLog | None = None,
    snap_km: float = 25.0,
    locator: StateLocator | None = None,
    fix_swapped: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Add ``state`` and ``region`` columns to a user-document table.

    ``docs`` needs ``user_id, lat, lon`` (NaN = unknown). Returns
    ``(frame, stats)``: a new frame (the input is not modified, index reset)
    and a JSON-ready dict for the manifest::

        {"users_in": int,            # rows received
         "users_out": int,           # rows returned
         "labeled": int,             # rows with a state
         "no_coordinates": int,      # NaN/missing lat or lon: kept, state ""
         "invalid_coordinates": int, # finite but impossible (|lat|>90..., or 0/0): kept, state "", coords NaN
         "swapped_coordinates": int, # outside the US, in a state once swapped: fixed (fix_swapped) or NaN
         "outside_us": int,          # valid points outside the 50 states + DC
         "outside_us_policy": str,
         "dropped_outside_us": int,
         "snapped": int,             # labelled by coastal snapping
         "snap_km": float,
         "by_region": {region: n}, "by_state": {code: n}}

    Users without coordinates stay (their text is still useful, e.g. for
    pre-training and prediction); they are counted, not logged as bad records.
    Invalid coordinates go through ``log.bad("invalid_coordinates")`` (so
    ``on_bad_record: fail`` stops on them) and are then treated as unknown;
    so is exactly (0, 0), the usual placeholder of a missing position (no US
    user is there, and as a regression target it would pull the coordinate
    head into the Gulf of Guinea). A point outside the US whose swap (lat <->
    lon) lies in a state is a ``swapped_coordinates`` record: swapped back
    with ``fix_swapped``, else treated as unknown, like the readers' swapped
    points. (The readers only catch swaps that leave |lat| > 90; a US point
    east of 90 W swaps into valid degrees, near Antarctica, and only the
    state polygons can tell.)
    Outside points follow ``outside_us``: ``drop`` removes them (counted in
    ``log`` under ``outside_us``), ``keep`` keeps them with state/region "",
    ``fail`` raises ``DataError`` naming the first such user and point.
    """
    if outside_us not in OUTSIDE_US_POLICIES:
        raise ValueError(f"outside_us must be one of {OUTSIDE_US_POLICIES}, got {outside_us!r}")
    for col in ("user_id", "lat", "lon"):
        if col not in docs.columns:
            at = f"{log.source}: " if log is not None and log.source else ""  # the caller's file, if it names one
            raise DataError(f"{at}documents table has no {col!r} column (columns: {list(docs.columns)})")
    if log is None:
        log = RecordLog(policy="skip", source="documents")
    frame = docs.reset_index(drop=True).copy()
    lat = pd.to_numeric(frame["lat"], errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(frame["lon"], errors="coerce").to_numpy(dtype=np.float64)
    missing = ~(np.isfinite(lat) & np.isfinite(lon))
    invalid = ~missing & ~valid_coordinates(lat, lon)
    null_island = ~missing & (lat == 0) & (lon == 0)
    uid = frame["user_id"].astype(str).to_numpy()
    for i in np.nonzero(invalid | null_island)[0]:
        detail = (f"user {uid[i]}: lat=0, lon=0 is the usual placeholder of a missing position" if null_island[i]
                  else f"user {uid[i]}: lat={lat[i]}, lon={lon[i]} out of range ({_out_of_range(lat[i], lon[i])})")
        log.bad("invalid_coordinates", detail + "; coordinates set to NaN, user kept", kept=True)
    invalid |= null_island
    if invalid.any():
        lat = np.where(invalid, np.nan, lat)
        lon = np.where(invalid, np.nan, lon)

    loc = locator or StateLocator(snap_km=snap_km)
    state = loc.locate(lat, lon)
    snapped = loc.snapped_
    has_point = ~missing & ~invalid
    unplaced = np.flatnonzero(has_point & (state == ""))
    swapped = np.zeros(len(frame), dtype=bool)
    if len(unplaced):
        sw_state = loc.locate(lon[unplaced], lat[unplaced])
        hit = sw_state != ""
        swapped[unplaced[hit]] = True
        for i, code in zip(unplaced[hit], sw_state[hit]):
            action = (f"swapped back (in {code})" if fix_swapped else
                      f"coordinates set to NaN, user kept (swapped, the point is in {code}: set data.fix_swapped: true "
                      "to swap them back)")
            log.bad("swapped_coordinates", f"user {uid[i]}: lat={lat[i]}, lon={lon[i]} is outside the US; {action}",
                    kept=True)
        if fix_swapped:
            lat, lon = lat.copy(), lon.copy()
            lat[swapped], lon[swapped] = lon[swapped].copy(), lat[swapped].copy()
            state[swapped] = sw_state[hit]
            snapped += loc.snapped_
        else:
            lat = np.where(swapped, np.nan, lat)
            lon = np.where(swapped, np.nan, lon)
            has_point &= ~swapped
    frame["lat"] = lat
    frame["lon"] = lon
    outside = has_point & (state == "")
    if outside.any() and outside_us == "fail":
        i = int(np.nonzero(outside)[0][0])
        raise DataError(
            f"{log.source + ': ' if log.source else ''}user {uid[i]} is outside the US (50 states + DC) at "
            f"lat={lat[i]}, lon={lon[i]} "
            f"({int(outside.sum())} such users); set data.outside_us to drop or keep to accept them"
        )
    frame["state"] = state
    frame["region"] = region_of(state)
    dropped = 0
    if outside_us == "drop" and outside.any():
        idx = np.nonzero(outside)[0]
        _record(log, "outside_us", len(idx), [f"user {uid[i]} at ({lat[i]:.5f}, {lon[i]:.5f})" for i in idx[:20]])
        frame = frame.loc[~outside].reset_index(drop=True)
        dropped = int(len(idx))
    labeled = frame["state"] != ""
    stats = {
        "users_in": int(len(docs)),
        "users_out": int(len(frame)),
        "labeled": int(labeled.sum()),
        "no_coordinates": int(missing.sum()),
        "invalid_coordinates": int(invalid.sum()),
        "outside_us": int(outside.sum()),
        "outside_us_policy": outside_us,
        "dropped_outside_us": dropped,
        "snapped": int(snapped),
        "swapped_coordinates": int(swapped.sum()),
        "snap_km": float(loc.snap_km),
        "by_region": {k: int(v) for k, v in frame.loc[labeled, "region"].value_counts().sort_index().items()},
        "by_state": {k: int(v) for k, v in frame.loc[labeled, "state"].value_counts().sort_index().items()},
    }
    _log.info(
        "labels: %d users, %d labelled (%d snapped), %d without coordinates, %d invalid, %d outside US (%s)",
        stats["users_in"], stats["labeled"], stats["snapped"], stats["no_coordinates"],
        stats["invalid_coordinates"], stats["outside_us"], outside_us,
    )
    return frame, stats
