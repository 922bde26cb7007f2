"""embedlab: embedding-space generative models, trained and scored by one DVC pipeline.

Importing the package pins the CPU kernels (embedlab.numerics) before torch or numpy load
theirs, so every stage, flow, test and benchmark computes the same numbers on every host.
"""

from embedlab.numerics import pin_environment as _pin_environment

_pin_environment()
