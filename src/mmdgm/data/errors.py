"""Errors raised while locating, reading or fetching data files."""

from __future__ import annotations


class DataFileError(ValueError):
    """A data file exists but is corrupt, truncated or not in the expected format."""


class MissingDataError(FileNotFoundError):
    """A dataset's files are absent; the message names the command that fetches them."""

    def __init__(self, dataset: str, missing: list[str], where: str) -> None:
        self.dataset = dataset
        self.missing = missing
        super().__init__(
            f"{dataset} data not found in {where} (missing: {', '.join(missing)}); "
            f"run `mmdgm data get {dataset}` to fetch it, or set MMDGM_DATA_DIR to a "
            "directory that holds it"
        )


class FetchError(OSError):
    """Every source of a dataset failed to deliver verified files."""
