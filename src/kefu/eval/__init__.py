"""Offline evaluation of kefu's parts against labelled data (retrieval, curated-answer calibration)."""
