"""`python -m semookii_bridge.cli`: the same as the `semookii-bridge` script."""

from . import main

main()
