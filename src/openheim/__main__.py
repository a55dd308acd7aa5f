from openheim.cli import main

raise SystemExit(main())
