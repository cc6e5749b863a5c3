"""GitOps: rendering manifests with the real `helm` binary (`gitops.helm`), the repository
layout of the platform design (`gitops.layout`) and the committer that writes, commits and
pushes with operation trailers (`gitops.committer`).

Infrastructure only: takes plain values and knows nothing of the domain packages.
"""
