"""What is counted: the catalogue of dimensions, de-duplication of sessions, and the tally."""
