"""What the exporter polls: the targets, from a YAML file or from the CMX_* settings as one target."""
