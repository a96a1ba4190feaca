from service.training.cli import main

raise SystemExit(main())
