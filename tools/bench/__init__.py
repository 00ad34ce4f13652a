"""The benchmark suite of issue #4: ``cfs bench`` (or ``make bench``); never run by the tests.

The same jobs run, in one invocation, on a directory of the real disk, on C FUSE
passthrough mounts of that disk (bindfs; libfuse's passthrough_hp when given), and on a
cfs volume served by a daemon of the run's own; one table shows the figures side by side
with the ratio cfs / C FUSE. See docs/PERFORMANCE.md for the jobs, the results and how
to read them.

Modules: ``runner`` (the command, the order of things), ``targets`` (what runs where),
``fio_jobs``, ``metadata`` and ``scenarios`` (the jobs), ``context`` (sizes and
measuring), ``procs`` (processes and mounts, stopped by PID), ``report`` (table, JSON).
"""
