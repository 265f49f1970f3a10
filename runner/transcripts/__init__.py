"""Transcripts on disk: record types, the crash-safe writer and journal, resume, the safe
reader, field accessors and merging shard outputs.
"""
