"""The search stage: Keras Tuner tuners with hpstudy's bookkeeping, and the ways a study's trials are run.

* ``search.tuners``: one mixin over Keras Tuner's own Hyperband, RandomSearch and BayesianOptimization.
* ``search.session``: prepare, build the tuner, run the search, conclude (``run_here`` chains them).
* ``search.processes``: the trials in fresh child processes, N at a time (``trials_per_process``).
* ``search.distributed``: Keras Tuner's chief/worker mode.

Nothing is imported here, so that ``python -m hpstudy.search.processes`` (a child process) starts clean.
"""
