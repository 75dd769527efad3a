"""The torch-free, HTTP-free core that training, export and serving share.

- :mod:`videocore.contract`: what an exported graph says about itself (its ONNX metadata).
- :mod:`videocore.decode`: bounded video decoding into upright RGB frames.
- :mod:`videocore.sampling`: the paper's TSN segment sampling.
- :mod:`videocore.views`: the resize and crop views a model sees.
- :mod:`videocore.errors`: why a clip cannot be used, with no HTTP status attached.

It imports nothing else of this project, so every stage gets identical frames from identical code.
"""
