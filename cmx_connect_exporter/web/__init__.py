"""The exporter's own HTTP side: the WSGI app and server, and the exporter-toolkit web config."""
