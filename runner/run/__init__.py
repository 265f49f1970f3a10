"""A batch run: its configuration, the expansion of the batch (variants, shards), the cost
plan, and the engine that replays each conversation turn by turn.
"""
