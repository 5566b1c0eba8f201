"""The exporter's own HTTP side: the asyncio server and its pages, basic auth, and the exporter-toolkit web config."""
