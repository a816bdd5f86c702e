"""Measurement: device-correct timers, the adaptive sampler, and the statistics they report."""
