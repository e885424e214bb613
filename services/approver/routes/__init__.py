"""The approver's HTTP routes, one module per resource; the console lives in services/console."""
