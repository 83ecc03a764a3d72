from bench.harness.run import main

raise SystemExit(main())
