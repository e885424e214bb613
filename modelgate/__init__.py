"""The `modelgate` command: runs the system locally and talks to its services."""
