"""Steering: the mitigations diffsteer applies (prompt interventions, h-space vectors, noise directions)."""
