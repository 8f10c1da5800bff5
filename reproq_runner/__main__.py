from reproq_runner.cli import main

raise SystemExit(main())
