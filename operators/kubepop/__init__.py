"""A Kubernetes PoP's side of the platform: the PoP operator (``operators.kubepop.operator``, kopf)
that reconciles ServiceClaims and DatabaseBackups and reports on ``dbaas.pop.status``, the engine
status mappings it judges engine resources by (``operators.kubepop.engines``), and the GitOps sync
(``operators.kubepop.sync``) that stands in for Argo CD when a Kubernetes PoP runs locally.
"""
