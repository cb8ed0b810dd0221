"""dyadiq."""
