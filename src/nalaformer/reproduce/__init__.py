"""``nalaformer reproduce``: the paper's claims at small scale, every task x attention kind x seed.

Tasks live in ``tasks.py`` (one function per task, each training through the shared training core),
``store.py`` keeps ``results.json`` (atomic, resumable), ``report.py`` writes the table and plots.
"""
