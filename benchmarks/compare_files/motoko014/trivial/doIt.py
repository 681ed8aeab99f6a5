"""The least a BlackDynamite run must do: without finish() it never counts as FINISHED."""
import BlackDynamite as BD

run, job = BD.getRunFromScript()
run.start()
run.finish()
