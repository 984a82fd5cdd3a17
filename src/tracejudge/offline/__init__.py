"""The loop around production judging: our judges offline (MLflow scorers), production failures as regression
sets, an offline release gate, and prompt optimisation with our judges as the objective."""
