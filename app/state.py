"""The small per-session state kept in gr.State: ids only, copyable, no tensors.

Everything a running generator and the pin / edit handlers share lives on the server in a
RunControl (app.runs) found by `run_id`; the session only says which document and run it shows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class DraftState:
    document_id: int | None = None
    run_id: int | None = None  # the run (branch) on screen

    def copy(self) -> DraftState:
        return dataclasses.replace(self)


@dataclass
class ReviewState:
    document_id: int | None = None
    document_version: int | None = None  # the version the reviewer read; a signature applies to it

    def copy(self) -> ReviewState:
        return dataclasses.replace(self)
