"""The command journal: what survives a restart or a takeover.

`protocol` is what the core sees (`Entry`, `CommandJournal`, `DuplicateRequest`, `JournalError`) and names no
database. `sqlite` keeps it on one host; `shared` keeps it in the leader's memory, written behind in fenced
transactions to `postgres` (the only module that imports asyncpg). `history` holds a new leader's finished
commands as keys, `timeline` is the journal's clock, `lease` the leader lease whose epoch fences the writes.
"""
