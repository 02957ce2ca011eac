"""``python -m img_agent.bench ann --quick``: the benchmark CLI without the main ``img-agent`` command."""

from img_agent.cli.bench import main

raise SystemExit(main())
