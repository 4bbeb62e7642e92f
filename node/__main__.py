"""`python -m node` runs the same command line as the `khazana` console script."""

from node.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
