"""A user module named like a standard library module that the runtime imports before user code."""

raise AssertionError("the runtime imports the standard library logging module before user code")
