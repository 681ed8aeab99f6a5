"""norm: squared and plain L2 distance of x to the target."""
import math

from motoko import current_run

run, job = current_run()
squared = sum((a - b) ** 2 for a, b in zip(job.x, job.target, strict=True))
run.y = [squared, math.sqrt(squared)]
run.push_quantity(squared, step=0, name="squared")
run.push_quantity(math.sqrt(squared), step=0, name="l2")
