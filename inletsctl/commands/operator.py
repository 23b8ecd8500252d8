"""`inletsctl operator run|manifests`: the Kubernetes operator, in ``inletsctl.operator``."""

from inletsctl.operator.cli import register

__all__ = ["register"]
