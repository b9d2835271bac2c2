"""kvmesh.router.policies."""
