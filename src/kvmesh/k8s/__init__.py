"""kvmesh.k8s."""
