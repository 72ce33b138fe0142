"""Explanations of what transfer learning changed: activations, flow differences and
which layer to re-train.
"""
