"""The Ray side: finding and joining the cluster, and a deployment's life on it (`connect()` is the way in)."""
