"""norm: squared and plain L2 distance of x to the target."""
import math

import BlackDynamite as BD

run, job = BD.getRunFromScript()
run.start()
squared = sum((a - b) ** 2 for a, b in zip(job.x, job.target, strict=True))
run.y = [squared, math.sqrt(squared)]
run.finish()
