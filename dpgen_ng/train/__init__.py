"""Trainers (DeePMD-kit)."""
