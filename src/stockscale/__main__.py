from stockscale.cli import main

raise SystemExit(main())
