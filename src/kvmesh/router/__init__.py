"""kvmesh.router."""
