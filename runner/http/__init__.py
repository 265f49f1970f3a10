"""One HTTP attempt at the chat-completions endpoint: the client, endpoint and key rules,
streaming, the transport, and the offline backend. It never retries and never waits its turn.
"""
