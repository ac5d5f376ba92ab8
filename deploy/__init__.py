"""Deployment files. deploy.schemas makes the schemas the Kubernetes manifests are validated
against (tests/test_kubeconform.py); not part of the wheel (pyproject.toml lists its packages)."""
