"""The ops of continuous flows (FFJORD): the time-dependent dynamics network evaluated with its
trace and regularisers in one call (``cpu``), and its vector-Jacobian product, including the
gradient through the trace estimate (a second derivative of the network)."""
