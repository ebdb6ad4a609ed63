"""The ops of arrays: CPU loops in ``cpu``, CUDA launches in ``cuda`` (imported only for the CUDA
backend)."""
