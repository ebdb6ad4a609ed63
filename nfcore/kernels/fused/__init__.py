"""Fused layer kernels: a coupling layer's whole conditioner MLP and its element-wise map in one
kernel call per direction (``cpu``). The op-by-op path (``coupling``, ``dense``) is their
reference; the layers choose the fused path for narrow conditioners on the CPU."""
