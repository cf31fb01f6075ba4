from muslin.cli import main

raise SystemExit(main())
