"""Progress for the long steps: a spinner while a step runs, a ✓ line with its time when it ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console


class Steps:
    """``with steps.step("Tracing"):`` shows a spinner, then ``✓ Tracing (3.1 s)``. ``quiet`` shows nothing."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.quiet:
            yield
        else:
            with self.console.status(f"{label}…"):
                yield
        elapsed = time.perf_counter() - start
        if not self.quiet:
            self.console.print(f"[green]✓[/] {label} [dim]({elapsed:.1f} s)[/]")

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)
