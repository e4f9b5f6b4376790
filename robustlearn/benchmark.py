"""The benchmark protocol for users' own data: tune on validation, test once, paired differences."""

from robustlearn._src.benchmark import Method, Result, compare, summarize, to_markdown

__all__ = ["Method", "Result", "compare", "summarize", "to_markdown"]
