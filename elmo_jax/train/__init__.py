"""Pretraining: train state and steps, Orbax checkpoints, the loop, export."""
