"""Launching runs: staging run directories, executing them, reporting back."""
