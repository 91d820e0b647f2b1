"""Exploration: LAMMPS inputs, model-deviation files, and candidate selection."""
