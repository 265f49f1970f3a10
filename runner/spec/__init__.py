"""The conversation model and reading it: YAML files in, validated :class:`Conversation` specs out.

Nothing here sends, writes or prints; every other layer reads these plain types.
"""
