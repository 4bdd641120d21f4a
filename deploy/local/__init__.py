"""`make deploy-local`: the Kubernetes dev overlay run with `podman kube play` (README.md here)."""
