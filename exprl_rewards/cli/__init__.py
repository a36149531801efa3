"""Command-line entry points (``python -m exprl_rewards.score``)."""
