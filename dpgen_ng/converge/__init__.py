"""Convergence: stop criteria, and the schedule that decides which job an iteration explores."""
