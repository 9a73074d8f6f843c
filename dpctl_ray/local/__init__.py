"""The local cluster: a head and worker nodes on this machine's loopback addresses, to try dpctl and test it on."""
