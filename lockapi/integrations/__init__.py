"""Scheduler integrations, each behind an optional extra so that core stays small.

* :mod:`lockapi.integrations.apscheduler` (``pip install lockapi[apscheduler]``): an APScheduler 3
  executor that runs each job under a lockapi guard, so a job added to several schedulers runs once
  per trigger.
* :mod:`lockapi.integrations.celery` (``pip install lockapi[celery]``): a Celery task base class: one
  execution per key across workers, and optionally no duplicate enqueued (celery-once's model).

Plain cron, systemd timers and Kubernetes CronJobs need no library: ``lockapi run`` (:mod:`lockapi.run`).
"""
