from geoae.cli import main

raise SystemExit(main())
