"""Draws the soak's time series (throughput, buffer, RSS, concurrency) with the chaos marked."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

COLORS = {
    "api_outage": "tab:red",
    "throttle_429_storm": "tab:orange",
    "errors_5xx_30pct": "tab:purple",
    "connection_resets": "tab:brown",
    "hangs": "tab:pink",
    "token_revoked": "tab:olive",
}


def plot(series: dict[str, Any], chaos: list[dict[str, Any]], path: Path, title: str) -> None:
    samples = series["samples"]
    t = [row["t"] for row in samples]
    figure, axes = plt.subplots(4, 1, figsize=(13, 11), sharex=True)
    delivered = series["delivered_per_s"]
    axes[0].plot([d[0] for d in delivered], [d[1] for d in delivered], lw=0.8, color="tab:green")
    axes[0].set_ylabel("delivered events/s")
    axes[1].plot(t, [row["buffered"] for row in samples], lw=0.8, label="buffered events")
    lag = [(row["t"], row["lag"]) for row in samples if row.get("lag") is not None]
    axes[1].plot([x for x, _ in lag], [y for _, y in lag], lw=0.8, label="consumer lag")
    axes[1].set_ylabel("events")
    axes[1].legend(loc="upper right", fontsize=8)
    rss: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in samples:
        for name, value in row["rss_mb"].items():
            rss[name].append((row["t"], value))
    for name, points in sorted(rss.items()):
        axes[2].plot([x for x, _ in points], [y for _, y in points], lw=0.8, label=name)
    axes[2].set_ylabel("RSS (MiB)")
    if len(rss) <= 12:
        axes[2].legend(loc="upper right", fontsize=7, ncol=3)
    axes[3].plot(t, [row["concurrency"] for row in samples], lw=0.8, label="concurrency limit")
    axes[3].plot(t, [row["inflight"] for row in samples], lw=0.8, label="in-flight requests")
    axes[3].set_ylabel("requests")
    axes[3].set_xlabel("seconds since start")
    axes[3].legend(loc="upper right", fontsize=8)
    for entry in chaos:
        for axis in axes:
            if entry["action"] == "api_fault":
                axis.axvspan(
                    entry["started_s"],
                    entry["ended_s"],
                    color=COLORS.get(entry["name"], "grey"),
                    alpha=0.15,
                )
            else:
                axis.axvline(entry["started_s"], color="black", lw=0.7, ls="--")
        axes[0].annotate(
            entry["name"],
            (entry["started_s"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
        )
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
