from frugal_lm.cli import main

raise SystemExit(main())
