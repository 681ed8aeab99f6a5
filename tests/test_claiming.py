"""Which runs a launcher claims: its own part, top down; only runs that fit a deadline."""

from __future__ import annotations

import datetime as _dt
import random
import time
from types import SimpleNamespace

from BTrees.IOBTree import IOBTree
from BTrees.OOBTree import OOBTree

from motoko.launch.claiming import Deadline, Share, Shares, fits_within, pick
from motoko.study.run_index import bucket_starts


def _created(ids: range | list[int]) -> IOBTree:
    return IOBTree({i: SimpleNamespace(id=i, walltime=None) for i in ids})


def test_each_launcher_starts_at_the_top_of_its_own_part():
    created = _created(range(1, 101))
    parts = [pick(created, 3, Share(i, 4)) for i in range(4)]
    assert parts == [[24, 23, 22], [49, 48, 47], [74, 73, 72], [100, 99, 98]]
    assert len({rid for part in parts for rid in part}) == 12, "no two launchers want the same run"


def test_an_emptied_part_takes_from_the_bottom_of_the_parts_above_then_below():
    # The owner eats its part from the top: a thief starts at the other end.
    created = _created([1, 2, 3, 90, 95])
    assert pick(created, 5, Share(1, 2)) == [95, 90, 1, 2, 3]
    assert pick(created, 10, Share(0, 2)) == [3, 2, 1, 90, 95]
    assert pick(_created([]), 3, Share()) == [] and pick(created, 0, Share()) == []
    assert pick(created, 5, Share(1, 2), steal=False) == [95, 90], "a launcher only topping up keeps to its part"
    assert pick(created, 5, Share(1, 2), steal=1) == [95, 90, 1], "claiming ahead, it steals for its idle slots only"


def test_a_thief_leaves_its_owner_the_runs_it_executes_in_a_moment_anyway():
    # Parts: [60, 80) holds 60-69, its owner eats them from the top; [80, 100] is empty.
    created = _created(range(60, 70))
    assert pick(created, 3, Share(1, 2), ceiling=100, leave=4) == [60, 61, 62], "from the bottom, below the owner's last 4"
    assert pick(created, 9, Share(1, 2), ceiling=100, leave=4) == [60, 61, 62, 63, 64, 65]
    assert pick(created, 3, Share(1, 2), ceiling=100, leave=10) == [], "nothing beyond what the owner ends at once"
    assert pick(created, 3, Share(1, 2), ceiling=100) == [60, 61, 62], "leave=0 (durations unknown): as before"


def test_the_runs_left_to_an_owner_follow_the_learned_durations():
    from motoko.launch.pacing import LEAVE_MAX, MIN_SAMPLES, Pacing

    pacing = Pacing(slots=1)
    assert pacing.leave("s") == 0, "unknown durations: steal as before"
    for rid in range(MIN_SAMPLES):
        pacing.started(("s", rid))
        pacing.ended(("s", rid), succeeded=True, at=time.monotonic() + 0.02)
    assert 8 <= pacing.leave("s") <= 10, "0.2 s of 20 ms runs"
    for rid in range(100, 100 + 2 * MIN_SAMPLES):
        pacing.started(("long", rid))
        pacing.ended(("long", rid), succeeded=True, at=time.monotonic() + 5.0)
    assert pacing.leave("long") == 0, "long runs: a slow owner's runs are taken"
    assert pacing.leave("s") <= LEAVE_MAX


def test_thieves_spread_over_the_other_parts_and_spare_a_parts_first_run():
    created = _created(range(1, 401))
    for rid in range(300, 401):  # the top part of 4 is empty: its launcher steals
        del created[rid]
    picks = [pick(created, 2, Share(3, 4), ceiling=400, chooser=random.Random(seed)) for seed in range(12)]
    firsts = {1, 100, 200}
    assert all(len(p) == 2 and not set(p) & firsts for p in picks), "a part's first run is drawn last"
    assert len({rid for p in picks for rid in p}) > 12, "thieves rarely pick the same runs"
    assert {(rid - 1) * 4 // 400 for p in picks for rid in p} > {0}, "thieves visit different parts"


def test_launchers_that_disagree_on_their_parts_draw_different_runs_until_settled():
    created = _created(range(1, 1001))
    unsettled = {tuple(pick(created, 2, Share(1, 2), chooser=random.Random(seed))) for seed in range(8)}
    assert len(unsettled) > 4 and all(500 < rid <= 1000 for p in unsettled for rid in p)
    settled = {tuple(pick(created, 2, Share(1, 2), chooser=random.Random(seed), settled=True)) for seed in range(8)}
    assert settled == {(1000, 999)}, "once every launcher agrees, its own part is eaten from the top"


def test_shares_re_rank_as_soon_as_a_launcher_arrives():
    now = _dt.datetime.now(_dt.timezone.utc)
    records = OOBTree({"a": SimpleNamespace(stopped=None, heartbeat=now)})
    shares = Shares("b", alive_for=60)
    assert shares.current(records) == Share(1, 2) and not shares.settled
    records["c"] = SimpleNamespace(stopped=None, heartbeat=now)
    records._p_serial = b"\x00" * 7 + b"\x01"  # what a commit of the new record does
    assert shares.current(records) == Share(1, 3), "re-ranked at once, not after SHARE_REFRESH"


def test_shares_rank_only_live_launchers():
    now = _dt.datetime.now(_dt.timezone.utc)
    records = {
        "a": SimpleNamespace(stopped=None, heartbeat=now),
        "b": SimpleNamespace(stopped=now, heartbeat=now),  # stopped
        "c": SimpleNamespace(stopped=None, heartbeat=now - _dt.timedelta(hours=1)),  # silent
        "d": SimpleNamespace(stopped=None, heartbeat=now),
    }
    assert Shares("d", alive_for=60).current(records) == Share(1, 2)
    assert Shares("new", alive_for=60).current(records) == Share(2, 3), "a launcher not yet recorded counts itself"


def test_a_deadline_admits_only_runs_that_fit():
    deadline = Deadline(time.time() + 100, margin=10)
    assert fits_within(None, 1000.0, True) is None, "not a pilot: everything fits"
    assert fits_within(deadline, 50.0, False) is None, "the study's runs all fit"
    refuse = fits_within(deadline, 500.0, False)
    assert refuse is not None and not refuse(SimpleNamespace())
    per_run = fits_within(deadline, None, True)
    assert per_run is not None
    runs = [SimpleNamespace(walltime=w) for w in (10.0, "00:01:00", 200.0, None)]
    assert [per_run(run) for run in runs] == [True, True, False, True]
    created = IOBTree({i + 1: run for i, run in enumerate(runs)})
    assert sorted(pick(created, 4, Share(), per_run)) == [1, 2, 4]
    assert Deadline(time.time() + 5, margin=10).closed() and not deadline.closed()


def test_parts_stay_put_while_the_top_launcher_eats_its_part():
    created = _created(range(1, 101))
    for rid in (100, 99, 98, 97, 96):
        del created[rid]
    # Cut up to the highest CREATED id, every part would have moved down into its neighbour's.
    assert pick(created, 3, Share(2, 4), ceiling=100) == [74, 73, 72]
    assert pick(created, 3, Share(2, 4)) == [70, 69, 68]


def _bucket_first_keys(tree: IOBTree) -> list[int]:
    """The first key of every bucket, walking the bucket chain (the first bucket's too)."""
    firsts, bucket = [], tree.__getstate__()[1]
    while bucket is not None:
        firsts.append(bucket.minKey())
        state = bucket.__getstate__()
        bucket = state[1] if len(state) > 1 else None
    return firsts


def test_the_first_keys_of_buckets_are_known_and_removing_one_rewrites_the_tree():
    created = _created(range(1, 1001))
    starts = bucket_starts(created)
    firsts = _bucket_first_keys(created)
    assert len(firsts) > 2 and starts == frozenset(firsts[1:]), "every bucket's first key but the first bucket's"
    separators = created.__getstate__()[0][1::2]
    inner = next(rid for rid in range(2, 1000) if rid not in starts and rid - 1 not in starts)
    del created[inner]
    assert created.__getstate__()[0][1::2] == separators, "a key inside a bucket leaves the tree as it was"
    start = sorted(starts)[0]
    del created[start]
    assert created.__getstate__()[0][1::2] != separators, "a bucket's first key is kept in the tree above it"
    assert bucket_starts(_created([])) == frozenset() and bucket_starts(_created(range(5))) == frozenset()


def test_a_bucket_first_key_is_taken_last():
    # Taking one rewrites the tree and fails every concurrent claim of a
    # bucket of it with a read conflict: launchers take the other keys first.
    created = _created(range(1, 1001))
    starts = bucket_starts(created)
    own = pick(created, 400, Share(1, 2))  # its part is the upper half, taken from the top
    assert len(own) == 400 and not starts & set(own)
    whole = pick(created, 501, Share(1, 2), steal=False)  # the whole part: its first keys come last
    held = starts & set(whole)
    assert len(whole) > 400 and held and set(whole[len(whole) - len(held):]) == held
    for chooser in (random.Random(1), random.Random(2)):  # a thief's draw, and a launcher's before the shares settle
        stolen = pick(created, 20, Share(2, 3), chooser=chooser)
        assert len(stolen) == 20 and not starts & set(stolen)
    lone = _created([7])
    assert pick(lone, 3, Share()) == [7], "nothing else left: it is taken"


def test_a_thief_with_one_idle_slot_leaves_a_part_bucket_first_key():
    # A thief takes the bottom of another part, below the runs it leaves to
    # the owner; that bottom is often the first key of a bucket. Cut to
    # exactly the one run it takes, it took each next first key in turn.
    created = _created(range(1, 1001))
    bounds = [Share(j, 3).start(1, 1000) for j in range(3)] + [1001]
    for rid in range(2, bounds[1]):  # the first part keeps one run, fewer than the thief leaves
        del created[rid]
    start = min(s for s in bucket_starts(created) if s > bounds[1] + 3)
    for rid in [*range(bounds[1], start), *range(bounds[2], 1001)]:  # the second part begins at a bucket; the third is empty
        del created[rid]
    assert start in bucket_starts(created) and created.minKey(bounds[1]) == start
    assert pick(created, 1, Share(2, 3), leave=2, ceiling=1000) == [start + 1]
    assert pick(created, 2, Share(2, 3), leave=2, ceiling=1000) == [start + 1, start + 2]
