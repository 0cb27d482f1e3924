"""PNG charts of a run (matplotlib, the optional "bench" extra): Pond's approximate ReLU against
SecureNN's exact one; private matmul time against size beside NumPy and the floor; time against the
network profile (measured under both emulations, and predicted); the model against the emulation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import published


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _ok(cells, **want) -> list[dict[str, Any]]:
    return [c for c in cells if c.get("status") == "ok" and all(c.get(k) == v for k, v in want.items())]


def _preferred_backend(cells) -> str:
    backends = {c["backend"] for c in _ok(cells, network="none")}
    return "processes" if "processes" in backends else next(iter(sorted(backends)), "threads")


def relu_chart(cells, plt, path: Path) -> bool:
    backend = _preferred_backend(cells)
    rows = {}
    for c in _ok(cells, op="relu", backend=backend, network="none", truncation="local"):
        rows.setdefault(c["protocol"], []).append(c)
    if not rows:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for protocol, marker in (("securenn", "o"), ("pond", "s")):
        points = sorted(rows.get(protocol, []), key=lambda c: c["dims"]["n"])
        if not points:
            continue
        n = [c["dims"]["n"] for c in points]
        axes[0].loglog(n, [c["median_s"] * 1e3 for c in points], marker=marker, label=protocol)
        axes[1].semilogx(n, [c["payload_bytes_total"] / c["dims"]["n"] for c in points], marker=marker, label=protocol)
        # an exact result has error 0: drawn at 2^-20, below every unit of the fixed point
        axes[2].loglog(n, [max(c["max_error"] or 0.0, 2.0 ** -20) for c in points], marker=marker, label=protocol)
    axes[0].set(title="time", xlabel="elements", ylabel="median ms")
    axes[1].set(title="communication", xlabel="elements", ylabel="bytes per element")
    axes[2].set(title="largest error (exact: drawn at 2^-20)", xlabel="elements", ylabel="|private - NumPy|")
    for ax in axes:
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"ReLU: Pond's polynomial on [-8, 8] against SecureNN's exact protocol ({backend}, local truncation)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def matmul_chart(cells, plt, path: Path) -> bool:
    square = [c for c in _ok(cells, op="matmul", network="none", protocol="securenn", truncation="local")
              if c["dims"]["m"] == c["dims"]["n"] == c["dims"]["v"]]
    if not square:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in sorted({c["backend"] for c in square}):
        points = sorted((c for c in square if c["backend"] == backend), key=lambda c: c["dims"]["n"])
        ax.loglog([c["dims"]["n"] for c in points], [c["median_s"] * 1e3 for c in points], "o-",
                  label=f"private, {backend}")
        if backend == _preferred_backend(cells):
            ax.loglog([c["dims"]["n"] for c in points], [c["floor"]["floor_s"] * 1e3 for c in points], "k:",
                      label=f"floor, {backend}")
    points = sorted({c["dims"]["n"]: c for c in square}.values(), key=lambda c: c["dims"]["n"])
    ax.loglog([c["dims"]["n"] for c in points], [c["plaintext_s"] * 1e3 for c in points], "s--",
              label="NumPy float64, plaintext")
    ax.set(title="n x n by n x n matrix product", xlabel="n", ylabel="median ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def network_chart(cells, plt, path: Path) -> bool:
    base = [c for c in _ok(cells, network="none", protocol="securenn", truncation="local", backend="processes")]
    keyed = []
    for b in base:
        runs = [c for c in _ok(cells, op=b["op"], size=b["size"], protocol="securenn", truncation="local")
                if c["network"] != "none"]
        if runs:
            keyed.append((b, runs))
    if not keyed:
        return False
    # SecureNN's published rows first (they have every emulation), then the rest, at most 14
    keyed.sort(key=lambda pair: published.paper_row(pair[0]["op"], pair[0]["size"]) is None)
    keyed = keyed[:14]
    networks = sorted({c["network"] for _, runs in keyed for c in runs})
    fig, axes = plt.subplots(1, len(networks), figsize=(6 * len(networks), 0.45 * len(keyed) + 2), squeeze=False)
    for ax, network in zip(axes[0], networks):
        labels, series = [], {"none (processes)": [], "shaping": [], "netns (tbf)": [], "model": []}
        for b, runs in keyed:
            labels.append(f"{b['op']} {b['size']}")
            shaped = next((c for c in runs if c["network"] == network and c["backend"] == "processes"), None)
            netns = next((c for c in runs if c["network"] == network and c["backend"] == "netns"), None)
            series["none (processes)"].append(b["median_s"] * 1e3)
            series["shaping"].append(shaped["median_s"] * 1e3 if shaped else 0)
            series["netns (tbf)"].append(netns["median_s"] * 1e3 if netns else 0)
            series["model"].append((shaped or {}).get("model", {}).get("predicted_s", 0) * 1e3)
        height = 0.2
        for i, (name, values) in enumerate(series.items()):
            ax.barh([j + i * height for j in range(len(labels))], values, height, label=name)
        ax.set_yticks([j + 1.5 * height for j in range(len(labels))], labels)
        ax.set_xscale("log")
        ax.set(title=f"securenn, {network}", xlabel="median ms (log)")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def model_chart(cells, plt, path: Path) -> bool:
    points = [c for c in cells if c.get("status") == "ok" and c.get("model")]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6, 6))
    for key in sorted({(c["emulation"], c["network"]) for c in points}):
        group = [c for c in points if (c["emulation"], c["network"]) == key]
        ax.loglog([c["model"]["predicted_s"] * 1e3 for c in group], [c["median_s"] * 1e3 for c in group], "o",
                  alpha=0.7, label=f"{key[0]}, {key[1]}")
    low = min(min(c["model"]["predicted_s"], c["median_s"]) for c in points) * 1e3
    high = max(max(c["model"]["predicted_s"], c["median_s"]) for c in points) * 1e3
    ax.loglog([low, high], [low, high], "k--", label="measured = predicted")
    ax.set(title="cost model against emulation", xlabel="predicted ms", ylabel="measured ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def draw(cells: list[dict[str, Any]], directory: Path) -> list[str]:
    """Draw every chart the cells allow into ``directory``; the file names written (relative)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, chart in (("relu_pond_vs_securenn.png", relu_chart), ("matmul_vs_size.png", matmul_chart),
                        ("time_vs_network.png", network_chart), ("model_vs_emulation.png", model_chart)):
        if chart(cells, plt, directory / name):
            written.append(name)
        plt.close("all")
    return written
