import sys

from inletsctl.cli import main

sys.exit(main())
