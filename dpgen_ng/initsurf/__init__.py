"""``dpgen init_surf``: slabs of a crystal, elongated along z and perturbed (DP-GEN's layout)."""
