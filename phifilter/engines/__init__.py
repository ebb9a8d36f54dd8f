"""Optional execution engines for `phifilter score` (imported only when asked for)."""
