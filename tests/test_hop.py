"""The hop in-process: an embedded launcher shares its workflow's database client."""

from __future__ import annotations

import asyncio
import threading
import time

from conftest import write_config, write_study

from motoko.flow.workflow import Workflow
from motoko.launch.service import EmbeddedLauncher
from motoko.study.database import StudyDB
from motoko.study.server import ensure_server

SLOW_POLL = "poll: {initial: 30, factor: 2, maximum: 60}\nlost_after: 5\nlauncher: {poll: 30, heartbeat: 1}\n"


def test_a_siblings_commit_is_told_to_other_threads_not_its_own(workdir):
    write_study(workdir, "s", "{x: int}", "pass\n")
    write_config(workdir, ["s"])
    db = StudyDB(ensure_server(workdir))
    sibling = db.sibling()
    heard: list[tuple[str, frozenset[bytes] | None]] = []
    here = threading.get_ident()
    db.feed.subscribe(lambda oids: heard.append(("main", oids)))
    try:
        # a commit of another thread (the sibling's) is heard in this one, at once
        thread = threading.Thread(target=lambda: sibling.transact(lambda: sibling.conn.root().__setitem__("hop", 1)))
        thread.start()
        thread.join()
        assert heard == [("main", frozenset({sibling.conn.root()._p_oid}))]
        assert db.feed.local_commits == 1 and threading.get_ident() == here
        # this thread's own commit is not echoed back to it (as ZEO does not)
        db.transact(lambda: db.conn.root().__setitem__("hop", 2))
        assert len(heard) == 1
        db.abort()
        assert db.conn.root()["hop"] == 2
    finally:
        sibling.close()
        assert db.conn.root()["hop"] == 2  # closing the sibling left the client open
        db.close()


def test_an_embedded_launcher_and_its_workflow_hear_each_other_in_process(workdir):
    # Polls of 30 s: awaits resolving in seconds prove that each side was told.
    write_study(workdir, "s", "{x: int}", "pass\n", launch="#!/bin/bash\nexit 0\n")
    write_config(workdir, ["s"], SLOW_POLL)
    workflow = Workflow(workdir, run_name="hop")
    databases = {str(db.address): db for db in workflow.databases}
    embedded = EmbeddedLauncher(workflow.config, databases=databases).start()
    try:
        (launcher,) = embedded.launchers
        assert launcher.db.db is workflow.main_db.db  # one database client for both
        feed = workflow.main_db.feed

        async def flow():
            started = time.monotonic()
            for x in range(3):
                await workflow.s.createTask(x=x)
            return time.monotonic() - started

        assert asyncio.run(flow()) < 10
        assert feed.local_commits >= 6  # each createTask heard by the launcher, each settle by the workflow
        assert [run.state for run, _ in workflow.s.select()] == ["FINISHED"] * 3
    finally:
        embedded.stop()
        workflow.close()
