"""Index maths of the fused layers' CUDA kernels (``cuda``), as ``@element`` functions: compiled for
the device on a GPU, pure Python under the simulator (``_scalar.device_maths``)."""

from .._scalar import element


@element
def locate(ws, p):
    """(layer, k, j) of the flat parameter index p over a network's weights ``ws``: layer 0's weight
    elements (k, j) in row-major order, then its biases (k = -1, j), then layer 1's, ...;
    (-1, 0, 0) past the end."""
    for layer in range(len(ws)):
        kk = ws[layer].shape[0]
        m = ws[layer].shape[1]
        if p < kk * m:
            return layer, p // m, p % m
        p -= kk * m
        if p < m:
            return layer, -1, p
        p -= m
    return -1, 0, 0
