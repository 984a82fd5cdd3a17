"""Labelled calibration sets for the built-in judges (``tracejudge calibrate``); see README.md here."""
