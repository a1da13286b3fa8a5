"""`python -m coterie` is the same as the `coterie` console script."""

from coterie.cli import main

raise SystemExit(main())
