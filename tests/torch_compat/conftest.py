"""The ports of torch's own launcher and TorchElastic tests (see CASES.md).

``bin/`` holds worker scripts, not tests: their names are torch's (``test_script.py``...),
so pytest is told not to collect them.
"""

collect_ignore = ["bin"]
