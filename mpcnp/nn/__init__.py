"""Layers and models for private inference (layer 7), built only on the public tensor API.

A model is an architecture every party builds identically; only the model's owner holds the
parameter values. Inside ``mp.run``, ``model.private(owner)`` secret-shares the parameters (only the
owner reads them) and returns a model whose forward pass runs on private and public tensors alike;
``model.forward_plain(x)`` runs the same architecture on NumPy arrays, for comparison.
"""
from mpcnp.nn.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Module, ReLU, Sequential

__all__ = ["Module", "Dense", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Sequential"]
