"""Reading transcripts back for people and CI: show, Markdown export, diff, JUnit and the HTML
report. It reads records only: nothing here sends a request or runs a batch.
"""
