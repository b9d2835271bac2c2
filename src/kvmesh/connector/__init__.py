"""kvmesh.connector."""
