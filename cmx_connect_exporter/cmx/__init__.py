"""Talking to CMX Connect: the HTTP client, the wire format of a page, and the walk over pages."""
