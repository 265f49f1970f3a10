"""Expectations: the check kinds, their parsing and evaluation, the judge's prompt and verdict.

Sending a judge request belongs to the run layer (``runner/run/judging.py``).

``kinds.py`` is the entry point (:class:`Check`, ``parse_expect``, ``evaluate``) and the
registry; ``base.py`` holds what every kind is made of. A new check kind goes in the module
of its family: ``text.py`` (the answer as text), ``structured.py`` (JSON), ``metrics.py``
(lengths and what the API reports: finish reason, latency, tokens) or ``judge.py``; add it
to that module's ``KINDS``, then to the editor schema (``runner/schemas/``) and the README.
"""
