"""kubectl crilinks: find broken filesystem and layer links on Kubernetes nodes."""

__version__ = "0.1.0"
