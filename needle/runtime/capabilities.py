"""``python -m needle.runtime.capabilities [--markdown]``: the capability matrix of this
machine's devices (see :mod:`needle.runtime.devices`)."""
import sys

from .devices import main

if __name__ == "__main__":
    sys.exit(main())
