"""The example pipeline as a DAG of steps: mult → add → norm → mult.

    motoko run workflows/pipeline.py [-p coefficients=[0.342,-2.31]] [-p rescale=2.0]
"""

import asyncio

from motoko import step


async def per_run(study, upstream, **fixed):
    """One run of `study` per upstream run, fed with its `y`, linked as its parent."""
    tasks = [study.createTask(x=run.y, parents=[run], **fixed) for run, _ in upstream]
    return [pair for done in await asyncio.gather(*tasks) for pair in done]


@step
async def mult(workflow, coefficients=(0.342, -2.31)):
    """y = a · [1, 2, 3] for each coefficient a."""
    return await workflow.mult.createTask(a=list(coefficients))


@step
async def add(workflow, mult):
    """y = x + 0.56."""
    return await per_run(workflow.add, mult)


@step
async def norm(workflow, add):
    """[squared, plain] L2 distance to [3.3, 2.34, 0.148]."""
    return await per_run(workflow.norm, add)


@step
async def remult(workflow, norm, rescale=2.0):
    """mult again, on the two norms of each branch."""
    runs = await per_run(workflow.mult, norm, a=rescale)
    return [run.y for run, _ in runs]
