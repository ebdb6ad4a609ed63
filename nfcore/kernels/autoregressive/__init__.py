"""The ops of the fast sequential MADE pass: element maths (with derivatives) in ``math``, CPU
loops in ``cpu``, CUDA launches in ``cuda`` (imported only for the CUDA backend)."""
