"""Reading transcripts back for people and CI: show, Markdown export, diff, JUnit and the HTML
report. It reads records only: nothing here sends a request or runs a batch.

``view`` holds what every renderer shares (the one safe-text rule, cutting,
a record's parts); ``diff`` computes a :class:`~runner.review.diff_model.RunDiff`,
``diff_text`` prints it, ``similarity`` measures answers; ``junit_text`` writes
the texts inside a JUnit testcase.
"""

FAIL_ON = ("regressed", "changed", "never")
"""When ``mtrun diff`` fails a CI job (``--fail-on``); here so the CLI need not load the diff."""
