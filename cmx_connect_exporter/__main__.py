"""``python -m cmx_connect_exporter``: the same as the ``cmx-connect-exporter`` command."""

from cmx_connect_exporter.cli import main

if __name__ == "__main__":
    main()
