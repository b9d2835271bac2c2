"""kvmesh.sim."""
