"""add: y = x + b (a BlackDynamite run script)."""
import BlackDynamite as BD

run, job = BD.getRunFromScript()
run.start()
run.y = [value + job.b for value in job.x]
run.finish()
