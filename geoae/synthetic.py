"""A small synthetic geotagged corpus: the embedded default for the demo and the tests.

Users live around real US cities; each city has a handful of local words
(team names, slang, places) mixed into otherwise generic, Zipf-distributed
tweets, and a user's point is the city centre jittered by a few tens of km.
That gives a corpus where text really carries location (so a model can beat
the majority baseline) yet is noisy (most words are uninformative), written
as Twitter API v1.1 JSON lines so the demo also exercises a real reader.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

# (city, state, lat, lon, local words)
CITIES = [
    ("new york", "NY", 40.7128, -74.0060, "knicks bodega subway brooklyn bronx yankees deli harlem"),
    ("los angeles", "CA", 34.0522, -118.2437, "lakers freeway hollywood dodgers venice tacos 405 valley"),
    ("chicago", "IL", 41.8781, -87.6298, "bulls cubs wrigley loop deepdish lakeshore southside bears"),
    ("houston", "TX", 29.7604, -95.3698, "rockets astros texans bayou hou hella humid kolaches"),
    ("seattle", "WA", 47.6062, -122.3321, "seahawks rain ferry sounders pikeplace mariners espresso cascade"),
    ("miami", "FL", 25.7617, -80.1918, "heat southbeach cuban dolphins hialeah cafecito brickell wynwood"),
    ("atlanta", "GA", 33.7490, -84.3880, "hawks falcons marta peachtree braves buckhead decatur atl"),
    ("boston", "MA", 42.3601, -71.0589, "celtics wicked sox fenway patriots dunkin southie bruins"),
    ("denver", "CO", 39.7392, -104.9903, "broncos nuggets rockies mile high boulder ski colfax"),
    ("phoenix", "AZ", 33.4484, -112.0740, "suns cardinals desert scottsdale tempe cactus monsoon diamondbacks"),
    ("philadelphia", "PA", 39.9526, -75.1652, "sixers eagles wawa cheesesteak phillies jawn broadst septa"),
    ("detroit", "MI", 42.3314, -83.0458, "pistons lions tigers motown coney redwings woodward dearborn"),
    ("washington", "DC", 38.9072, -77.0369, "wizards metro capitol nationals georgetown redskins mumbo dupont"),
    ("minneapolis", "MN", 44.9778, -93.2650, "vikings twins timberwolves lakes uff hotdish duluth snow"),
    ("new orleans", "LA", 29.9511, -90.0715, "saints gumbo bourbon bayou beignets mardi nola parish"),
    ("nashville", "TN", 36.1627, -86.7816, "titans predators honky broadway hotchicken opry country vols"),
]

GENERIC = (
    "i the to a you and it my is in that me lol of for on so just be this have not with get what do "
    "was like all go love are but up now im your at know out got can day good one dont today when "
    "no we time need want back its going will see how new think about much really people make night "
    "haha work home happy tonight right well still lmao shit gonna yes follow thanks oh great last "
    "more come off never let ok school life way tomorrow morning feel bad wait watch some our hate"
).split()


def generate_users(n_users: int = 600, seed: int = 0, tweets_per_user: tuple[int, int] = (8, 30), local_rate: float = 0.08):
    """Yield ``(user_id, lat, lon, state, [tweets])`` for ``n_users`` synthetic users."""
    from geoae.labels import StateLocator  # the boundaries are read once per process

    locator = StateLocator()
    rng = np.random.default_rng(seed)
    # City sizes vary, so a majority-state baseline is meaningful but weak.
    weights = rng.dirichlet(np.full(len(CITIES), 2.0))
    zipf = 1.0 / np.arange(1, len(GENERIC) + 1)
    zipf /= zipf.sum()
    for u in range(n_users):
        c = rng.choice(len(CITIES), p=weights)
        name, state, lat, lon, local = CITIES[c]
        local_words = local.split()
        lat_u = float(lat + rng.normal(0, 0.15))
        lon_u = float(lon + rng.normal(0, 0.15))
        lat_u, lon_u = _on_land(locator, lat_u, lon_u, lat, lon)
        tweets = []
        for _ in range(int(rng.integers(*tweets_per_user))):
            n = int(rng.integers(4, 14))
            words = list(rng.choice(GENERIC, size=n, p=zipf))
            for i in range(n):
                if rng.random() < local_rate:
                    words[i] = str(rng.choice(local_words))
            if rng.random() < 0.1:
                words.append(f"@USER_{rng.integers(1 << 30):08x}")
            if rng.random() < 0.05:
                words.append("http://t.co/" + "".join(rng.choice(list("abcdefgh"), 6)))
            tweets.append(" ".join(words))
        yield f"u{seed}_{u:06d}", lat_u, lon_u, state, tweets


def _on_land(locator, lat_u: float, lon_u: float, lat: float, lon: float) -> tuple[float, float]:
    """The jittered point, or, when it fell in the sea (or abroad) beyond the labeller's coastal
    snap, the point moved halfway back to its city centre until it is in a state: a coastal
    city's users would otherwise be dropped as outside the US, and the demo warned about it.
    No random draw: every other user of a seed is exactly what it was."""
    for _ in range(8):
        if locator.locate([lat_u], [lon_u])[0]:
            break
        lat_u, lon_u = (lat_u + lat) / 2, (lon_u + lon) / 2
    return lat_u, lon_u


def _open_text(path: Path, encoding: str):
    """Open ``path`` for text writing, gzip-compressed when it ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return (gzip.open if path.suffix == ".gz" else open)(path, "wt", encoding=encoding)


def write_twitter_jsonl(path: str | Path, n_users: int = 600, seed: int = 0, **kw) -> Path:
    """Write the synthetic corpus as Twitter API v1.1 JSON lines (``coordinates`` is [lon, lat])."""
    path = Path(path)
    with _open_text(path, "utf-8") as f:
        for uid, lat, lon, _state, tweets in generate_users(n_users, seed, **kw):
            for i, text in enumerate(tweets):
                obj = {
                    "id_str": f"{uid}_{i}",
                    "text": text,
                    "user": {"id_str": uid, "screen_name": uid},
                    "coordinates": {"type": "Point", "coordinates": [lon, lat]} if i == 0 else None,
                }
                f.write(json.dumps(obj) + "\n")
    return path


def write_rahimi(path: str | Path, n_users: int = 300, seed: int = 0, **kw) -> Path:
    """Write the synthetic corpus in Rahimi's per-user format (``user\\tlat\\tlon\\ttweets joined by ' ||| '``)."""
    path = Path(path)
    with _open_text(path, "latin-1") as f:
        for uid, lat, lon, _state, tweets in generate_users(n_users, seed, **kw):
            f.write(f"{uid}\t{lat:.6f}\t{lon:.6f}\t{' ||| '.join(tweets)}\n")
    return path
