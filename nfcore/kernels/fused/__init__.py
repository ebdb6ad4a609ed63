"""Fused layer kernels: a coupling layer's whole conditioner MLP and its element-wise map in one
kernel call per direction (``cpu``; on a GPU one launch forward and three backward, ``cuda``).
The op-by-op path (``coupling``, ``dense``) is their reference; the layers choose the fused path
for narrow conditioners on either device. Runs of coupling layers in one call (``chain_map``)
are CPU-only."""
