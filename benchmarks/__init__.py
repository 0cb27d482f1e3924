"""mpcnp's benchmark harness: ``python -m benchmarks`` (see __main__.py for the options).

Modules, in the order they depend on each other:

- ``published``: SecureNN's published tables and the project's targets, in one table.
- ``networks_functional``: SecureNN's networks A-D on the functional API (until benchmarks/networks.py).
- ``ops``: the operations measured: sizes, inputs, private and NumPy versions, tolerances.
- ``harness``: timing inside one mp.run (agreed start, slowest party), counts, calibration.
- ``costmodel``: the cost table's bytes and rounds per cell; the network model; its agreement.
- ``limits``: the machine's floor (GEMM peak, round time, channel bandwidth) for a cell.
- ``netns``, ``netns_party``: parties in network namespaces, links shaped by tc tbf.
- ``matrix``: the cells and running them; ``report``: JSON and markdown; ``charts``: PNGs.
- ``ring``, ``net``: the ring-kernel and channel microbenchmarks (``python -m benchmarks ring|net``).
"""
