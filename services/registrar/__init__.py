"""The registrar: the catalog of model groups and versions, their metadata, lineage and per-stage status."""
