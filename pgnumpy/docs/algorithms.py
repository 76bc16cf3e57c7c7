"""The algorithm pages: key equations, pseudocode, the file, hyperparameters, the figure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Algorithm:
    slug: str
    title: str
    summary: str

    @property
    def page(self) -> str:
        return f"algo-{self.slug}.html"


ALGORITHMS: list[Algorithm] = []


def render(site, algo: Algorithm) -> str:
    return ""
