#!/bin/bash
# BlackDynamite's bash launcher prepends the BLACKDYNAMITE_* variables that
# getRunFromScript() reads; `python` is the benchmark venv's (first in PATH).
python doIt.py
