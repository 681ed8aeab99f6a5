"""norm: [squared L2, L2] distance of x to the target.    python norm.py IN OUT"""
import json
import math
import sys

TARGET = [3.3, 2.34, 0.148]
source, out = sys.argv[1], sys.argv[2]
with open(source) as f:
    x = json.load(f)["y"]
squared = sum((a - b) ** 2 for a, b in zip(x, TARGET, strict=True))
with open(out, "w") as f:
    json.dump({"y": [squared, math.sqrt(squared)]}, f)
