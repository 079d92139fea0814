"""`python -m bench.paper`: the same as `semcom bench paper`."""

from bench.paper.cli import main

raise SystemExit(main())
