"""The benchmark protocol for users' own data: tune on validation, test once, paired differences."""

from robustlearn._src.benchmark import LeakageError, Method, Result, compare, summarize, to_markdown

__all__ = ["LeakageError", "Method", "Result", "compare", "summarize", "to_markdown"]
