"""``python -m tunnel_core`` and the zipapp run the same CLI."""

import sys

from .cli import main

sys.exit(main())
