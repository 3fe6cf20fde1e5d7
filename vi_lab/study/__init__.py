"""Study: hyperparameter searches with Optuna (Akiba et al. 2019) over `vi_lab.train.train`.

`config` is the typed study config and search space; `storage` resolves where trials are
stored (journal file, SQLite, PostgreSQL); `folder` binds a study to its folder; `runner`
runs the trials (workers, pruning, reclaiming stale trials) and summarizes them.
"""
