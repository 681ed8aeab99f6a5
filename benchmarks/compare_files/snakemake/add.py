"""add: y = x + b.    python add.py B IN OUT"""
import json
import sys

b, source, out = float(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(source) as f:
    x = json.load(f)["y"]
with open(out, "w") as f:
    json.dump({"y": [value + b for value in x]}, f)
