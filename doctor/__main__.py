from doctor.ui.cli import main

raise SystemExit(main())
