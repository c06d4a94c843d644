"""Environments: LaneSim (the real game), the dream env, vector/TorchRL envs and play."""
