"""``python -m cmx_simulator``: the simulator alone, for compose and for trying the exporter by hand."""

from cmx_simulator.server import main

if __name__ == "__main__":
    main()
