"""Agent learning: phase 3 imagination training (PMPO), returns, and evaluation."""
