"""Private model serving (docs/serving.md): a model owner secret-shares a model into the three core
services once; clients that come and go later get predictions that only they see.

- ``Client`` (client.py): upload, predict, models, delete; ``ServiceError`` when the service cannot answer.
- ``Service`` (service.py): one core party as a long-running service (``python -m mpcnp serve``), with
  its session among the core parties (session.py), its client socket (gateway.py), its model store
  (store.py) and its pools of preprocessed randomness (pool.py).
- spec.py: a model's architecture as data; config.py: the cluster file with its clients; wire.py: the
  messages between clients and servers.

The client side (client, config, spec, wire) sits in layer 6, below ``mpcnp.nn``, so that the package
``mpcnp`` can export ``Client``; the service is an application of layer 7.
"""
from mpcnp.serving.client import Client, ServiceError

__all__ = ["Client", "ServiceError"]
