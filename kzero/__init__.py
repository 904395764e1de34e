"""kzero: zero weights + random biases, a Keras 3 multi-backend reproduction."""

# 0.2.0: the NumPy input pipeline reshuffles every epoch (0.1.0 replayed the
# first epoch's order under model.fit); kzero.report flags runs made before.
__version__ = "0.2.0"
