"""The example pipeline written as a motoko 0.1.4 orchestrator (event actions).

    motoko run workflows/orchestrator.py      (or: motoko run, via motoko.yaml)
"""

from motoko.workflow import event


@event
async def forward_mult(workflow, runs, **params):
    for run, _job in runs:
        workflow.add.createTask(x=run.y)
        run.state = "FORWARDED"


@event
async def forward_add(workflow, runs, **params):
    for run, _job in runs:
        workflow.norm.createTask(x=run.y)
        run.state = "FORWARDED"


@event
async def forward_norm(workflow, runs, **params):
    for run, _job in runs:
        workflow.mult.createTask(x=run.y, a=params.get("rescale", 2.0))
        run.state = "FORWARDED"


def all_done(workflow, task_manager):
    first = len(task_manager.select("event_name = main"))
    final = len(task_manager.select(["state = FINISHED", "event_name = forward_norm"]))
    return first > 0 and final == first


async def finish(workflow, **params):
    workflow.finished = True


def populate_arg_parser(parser):
    parser.add_argument("--rescale", type=float, default=2.0)


async def main(workflow, **params):
    workflow.add_action("mult_to_add", task="mult", event="state = FINISHED, event_name = main", f=forward_mult)
    workflow.add_action("add_to_norm", task="add", event="state = FINISHED", f=forward_add)
    workflow.add_action("norm_to_mult", task="norm", event="state = FINISHED", f=forward_norm)
    workflow.add_action("done", task="mult", event=all_done, f=finish)
    workflow.add_error_handler()
    workflow.mult.createTask(a=[0.342, -2.31])
