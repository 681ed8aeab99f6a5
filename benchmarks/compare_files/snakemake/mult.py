"""mult: y = a · x.    python mult.py A X OUT

X is a JSON file written by an upstream stage ({"y": [...]}) or a JSON list.
"""
import json
import os
import sys

a, source, out = float(sys.argv[1]), sys.argv[2], sys.argv[3]
if os.path.exists(source):
    with open(source) as f:
        x = json.load(f)["y"]
else:
    x = json.loads(source)
with open(out, "w") as f:
    json.dump({"y": [a * value for value in x]}, f)
