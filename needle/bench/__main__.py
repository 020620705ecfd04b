"""``python -m needle.bench``: the same as the ``needle-bench`` command."""
import sys

from .cli import main

sys.exit(main())
