"""Step-by-step progress lines for a conversion (fetch, load, export, optimize, score...).

Each step prints one status line while it runs and one result line with its duration when it
ends, on stderr (stdout stays clean for `--print-digest` and JSON). The durations are kept in
`timings` for the manifest. Quiet mode records timings and prints nothing. Names, details
and notes (paths, URIs) are escaped: Rich would read a `[...]` in them as markup.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape


class Steps:
    """Times named steps and shows them with rich."""

    def __init__(self, show: bool = True, console: Console | None = None):
        self.show = show
        self.console = console or Console(stderr=True, highlight=False)
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        start = time.perf_counter()
        label = escape(f"{name} {detail}".strip())
        ok = False
        try:
            if self.show:
                with self.console.status(f"[bold]{label}[/]…"):
                    yield
            else:
                yield
            ok = True
        finally:
            took = time.perf_counter() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + took, 4)
            if self.show:
                mark = "[green]✓[/]" if ok else "[red]✗[/]"
                self.console.print(f"{mark} {label} [dim]{took:.1f}s[/]")

    def note(self, message: str) -> None:
        if self.show:
            self.console.print(f"  {escape(message)}")
