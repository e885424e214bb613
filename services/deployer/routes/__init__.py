"""The deployer's HTTP routes, one module per resource."""
