"""``dpgen init_bulk``: initial training data from a crystal."""
