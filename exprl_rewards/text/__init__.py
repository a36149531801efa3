"""Text: the data model and what cuts it.

:mod:`.rollout` (a rollout, its segments, a guard's hit), :mod:`.slicers` (step
boundaries), :mod:`.alignment` (segments to token spans), :mod:`.tokens` (step values
to tokens), :mod:`.ragged` (ragged arrays), :mod:`.answers` (final answers). Nothing here
knows about judges or rewards.
"""
