"""The project's own error types.

Every problem a user can cause (bad config, bad data, bad checkpoint) is raised as a
`SeglabError` with a one-line message naming the file, the record and what is wrong,
so the CLI can print it without a traceback.
"""


class SeglabError(Exception):
    """Base class: the CLI prints these as one line, never as a traceback."""


class ConfigError(SeglabError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(SeglabError):
    """Input data is broken: missing image, bad polygon, unknown category id..."""


class DataValidationError(DataError):
    """Several problems (config, data, output folder) found at once before any work starts;
    `problems` holds one line per problem."""

    def __init__(self, problems: list[str], max_shown: int = 20):
        self.problems = list(problems)
        if len(self.problems) == 1:  # one problem: one line
            super().__init__(self.problems[0])
            return
        shown = self.problems[:max_shown]
        more = len(self.problems) - len(shown)
        lines = [f"{len(self.problems)} problem(s) found:"] + [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more (run `seglab data validate CONFIG` for the full list)")
        super().__init__("\n".join(lines))


class CheckpointError(SeglabError):
    """A checkpoint does not fit the model or run it is loaded into."""
