"""The nine steps of an iteration: make / run / post for 00.train, 01.model_devi, 02.fp."""
