"""`python -m dpctl_ray`: the same as the `dpctl` console script."""

from dpctl_ray.cli.app import main

main()
