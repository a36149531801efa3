"""Input and output: :mod:`.jsonl` (rollout rows and their fields), :mod:`.sources`
(files, folders, Parquet, object stores) and :mod:`.httpd` (the HTTP layer of the
reward server)."""
