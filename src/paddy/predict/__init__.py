"""From trained models to a submission: TTA, the probability tables, the ensemble and its forms, new photos."""
