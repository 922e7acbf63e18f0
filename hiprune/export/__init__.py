"""Checkpoint → PrunedEncoder → traced graph. Never imports ``hiprune.runtime``."""
