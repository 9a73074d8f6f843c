"""The dpctl command line."""
