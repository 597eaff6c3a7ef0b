"""Simulators that make data with known truth: distortion fields, lab campaigns, sky campaigns."""
