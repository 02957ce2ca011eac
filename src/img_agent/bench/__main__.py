"""``python -m img_agent.bench ann --quick``: the benchmark CLI without the main ``img-agent`` command."""

from img_agent.bench.cli import main

raise SystemExit(main())
