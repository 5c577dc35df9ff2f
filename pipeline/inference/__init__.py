"""Talking to the emotion model: label sets and the async Triton client."""
