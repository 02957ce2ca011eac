from img_agent.cli import main

raise SystemExit(main())
