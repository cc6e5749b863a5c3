"""Deployment of the platform: the local stack launcher (``deploy.stack``), the topic
specification (``deploy/topics.yaml``), Helm charts and CRDs.

Infrastructure only: nothing here imports the domain packages.
"""
