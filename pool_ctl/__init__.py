"""llorch-pool: model catalog, backend detection and worker processes on one pool host."""
