"""``inletsctl operator``: LoadBalancer Services get a public IP through an exit server.

kopf runs the handlers (``handlers``); ``resources`` builds every object they write
and the manifests that install the operator; ``cli`` is the typer sub-app. kopf is
imported only by ``handlers``, so ``inletsctl --help`` never loads it.
"""
