"""mult: y = a · x (a BlackDynamite run script)."""
import BlackDynamite as BD

run, job = BD.getRunFromScript()
run.start()
run.y = [job.a * value for value in job.x]
run.finish()
