"""mult: y = a · x."""
from motoko import current_run

run, job = current_run()
run.y = [job.a * value for value in job.x]
run.push_quantity(run.y, step=0, name="y")
