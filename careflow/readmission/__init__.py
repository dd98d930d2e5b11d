"""30-day readmission risk (seed P11, P12): features, the LACE baseline, the synthetic cohort with its
documented generative risk model, the gradient-boosting model and its evaluation by subgroup.

Pure Python and numpy: no Temporal, no I/O.  The workflows that score discharges and train models
(the readmission pipeline) call these functions through thin activities.
"""
