"""`python -m bench.paper`: the same as `semcom bench paper`."""

from bench.paper.run import main

raise SystemExit(main())
