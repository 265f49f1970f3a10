"""Transcripts on disk: what a run writes and every review command reads.

``records`` (the record types), ``status`` and ``totals`` (one rule each);
``store`` (the crash-safe writer and resume bookkeeping) over ``journal``
(append-only files, fsync), ``resume`` (what a resumed output may trust) and
``known`` (what the output holds per id, compactly);
``reader`` (the safe reader), ``jsonio`` (JSON lines in and out), ``fields``
(tolerant accessors), ``atomic`` (whole files) and ``merge`` (shard outputs).
"""
