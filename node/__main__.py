"""`python -m node` runs the same command line as the `khazana` console script."""

from node.cli import main

raise SystemExit(main())
