"""What /metrics shows: the exporter's own metric names, and the snapshot rendered from a poll."""
