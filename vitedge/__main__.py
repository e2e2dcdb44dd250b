import sys

from vitedge.cli.main import main

sys.exit(main())
