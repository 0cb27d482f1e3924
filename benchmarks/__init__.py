"""mpcnp's benchmark harness: ``python -m benchmarks`` (see __main__.py for the options).

Modules, in the order they depend on each other:

- ``published``: SecureNN's published tables and the project's targets, in one table.
- ``networks_functional``: SecureNN's networks A-D on the functional API, weights masked afresh each
  run as the paper counts bytes (the "network" rows; ``networks`` builds them with ``mpcnp.nn``).
- ``ops``: the operations measured: sizes, inputs, private and NumPy versions, tolerances.
- ``harness``: timing inside one mp.run (agreed start, slowest party), counts, calibration.
- ``costmodel``: the cost table's bytes and rounds per cell; the network model; its agreement.
- ``limits``: the machine's floor (GEMM peak, round time, channel bandwidth) for a cell.
- ``netns``, ``netns_party``: parties in network namespaces, links shaped by tc tbf.
- ``matrix``: the cells and running them; ``report``: JSON and markdown; ``charts``: PNGs.
- ``ring``, ``net``: the ring-kernel and channel microbenchmarks (``python -m benchmarks ring|net``).
- ``training``: private training of network A (``python -m benchmarks training``).
- ``networks``, ``serving``: networks A-D with ``mpcnp.nn`` at batch 1 and 128
  (``python -m benchmarks.networks``), and the serving cluster's latency and throughput
  (``python -m benchmarks.serving``), each with its own options.
"""
