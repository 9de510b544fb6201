"""More than one bridge: the hot standby on the shared journal, the fleet's registration and matching settings,
what a new leader waits out, and a second copy without `[ha]` refused."""
