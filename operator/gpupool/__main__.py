"""`python -m gpupool` is the same as the `gpupool` console script."""

from gpupool.cli import main

raise SystemExit(main())
