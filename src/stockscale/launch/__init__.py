"""Where training runs: local processes (one process or an emulated cluster) and Kubernetes."""
