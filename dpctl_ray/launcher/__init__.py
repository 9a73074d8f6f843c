"""Applying plans to a Ray cluster: connect, snapshot, create placement groups and engines, stream readiness."""
