"""Transcripts on disk: what a run writes and every review command reads.

``records`` (the record types), ``status`` and ``totals`` (one rule each);
``store`` (the crash-safe writer and resume bookkeeping) over ``journal``
(append-only files, fsync) and ``resume`` (what a resumed output may trust);
``reader`` (the safe reader), ``jsonio`` (JSON lines in and out), ``fields``
(tolerant accessors), ``atomic`` (whole files) and ``merge`` (shard outputs).
"""
