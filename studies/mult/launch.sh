#!/bin/bash
# Runs doIt.py with the Python interpreter motoko runs under.
set -e
exec "${MOTOKO_PYTHON:-python3}" doIt.py
