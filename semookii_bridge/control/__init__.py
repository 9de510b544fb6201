"""The command path, plain code: what a control message must pass, the latest-wins queue, sending once, result
polling, the journal's resumption, and what the bridge knows of the fleet. No transport is imported here."""
