from geoae.cli import main

# Guarded: ``geoae predict`` may start a reader process with the "spawn" method, which imports
# the parent's main module again in the child.
if __name__ == "__main__":
    raise SystemExit(main())
