"""In-process record of task calls, for tests that run tasks in the test process."""

calls: list[str] = []
