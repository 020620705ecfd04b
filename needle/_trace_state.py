"""The ``needle.compile`` trace being recorded, or ``None``.

The few places that must behave differently while a step is traced read it: validation
that reads data back to the host (label ranges) is skipped, and random draws refuse (a
draw would be frozen into the graph). It lives outside :mod:`needle.compiler` so that the
ops can read it without importing the compiler."""
ACTIVE = None
