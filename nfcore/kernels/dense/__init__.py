"""The ops of dense layers: CPU loops in ``cpu``, CUDA launches in ``cuda`` (imported only for the
CUDA backend)."""
