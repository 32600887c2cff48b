"""Read a Prometheus endpoint, and one process's own counters in a multiprocess folder."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample an endpoint shows, by name and labels. A fresh connection each time,
    so behind one port of several processes any of them may answer."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


def own_counters(folder: Path) -> dict[int, dict[str, float]]:
    """Process id -> its own counter samples (unlabelled ones), as written in the folder
    of multiprocess mode: what each process counted, before any adding up."""
    counted: dict[int, dict[str, float]] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        mine = counted.setdefault(pid, {})
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)
            if not labels:
                mine[name] = value
    return counted
