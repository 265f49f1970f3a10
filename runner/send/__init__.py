"""The send path: how each request to an endpoint waits its turn (holds, pacing, request
slots), is retried, and is recorded or replayed.
"""
