#!/usr/bin/env python3
"""GeoText benchmark, the scripted way: same as `geoae benchmark`.

    python scripts/benchmark_geotext.py                          # in-house protocol, all ablations
    python scripts/benchmark_geotext.py --full-text PATH/full_text.txt   # official protocol

Writes runs/benchmark/{benchmark.json,benchmark.md,report/} and prints the table.
"""

import sys

from geoae.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["benchmark", *sys.argv[1:]]))
