"""The readmission pipeline: features, LACE, the synthetic cohort, the model and its evaluation."""
