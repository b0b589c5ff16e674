"""Parallelism: the device mesh and the logical-axis rule table (mesh.py)."""
