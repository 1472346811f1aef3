"""Job lock names: every (job, element) pair has its own lock and done marker (issue 13, item 12)."""

from __future__ import annotations

import lockapi
from lockapi import Job


def test_a_colon_in_the_job_name_or_the_element_never_collides() -> None:
    pairs = [("a", "b:c"), ("a:b", "c"), ("a\\", ":c"), ("a", "\\:c"), ("a\\:b", "c"), ("a", "b\\:c")]
    names = {Job(job).lock_name(element) for job, element in pairs}
    assert len(names) == len(pairs)


def test_colon_free_job_names_keep_their_lock_names() -> None:
    """Names of jobs without ':' or '\\' are unchanged, so locks and markers written before still match."""
    assert Job("issue-invoice").lock_name(42) == "issue-invoice:42"


def test_one_job_marked_done_does_not_skip_the_other() -> None:
    with lockapi.connect("memory://job-names") as mgr:
        jobs = mgr.jobs()
        first, second = Job("a", ttl=30), Job("a:b", ttl=30)
        assert jobs.lock(first, "b:c")
        jobs.successfully_processed(first, "b:c")
        assert jobs.lock(second, "c"), "job 'a:b' element 'c' was skipped as done by job 'a' element 'b:c'"
        jobs.unlock(second, "c")
