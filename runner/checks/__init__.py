"""Expectations: the check kinds, their parsing and evaluation, and the pure half of the judge
(its prompt and verdict). Sending a judge request belongs to the run layer.
"""
