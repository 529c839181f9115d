"""The figures of a run folder (matplotlib, Agg backend; PNG files).

* ``per_class_accuracy.png``: test accuracy per class, classes sorted by
  training-set size (largest first), bars coloured by shot group.
* ``shot_groups.png``: many / medium / few / all accuracy.
* ``training_curves.png``: loss, accuracy and learning rate per epoch.
* ``sample_margins.png``: histogram of test sample margins
  ``z_y - max_{j != y} z_j`` per shot group.
* ``embedding.png``: 2-D embedding of the penultimate features of test images,
  coloured by class (UMAP where installed, else scikit-learn t-SNE, or PCA).
"""

import numpy as np

__all__ = ["plot_all", "embed_2d", "GROUP_COLORS"]

GROUP_COLORS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def shot_group_of(counts, many=100, few=20):
    return ["many" if n > many else "few" if n < few else "medium" for n in counts]


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return str(path)


def plot_per_class(path, per_class, counts, class_names, title):
    plt = _pyplot()
    order = np.argsort(-np.asarray(counts), kind="stable")
    groups = shot_group_of(counts)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(counts) + 2), 4))
    values = [np.nan if per_class[i] is None else 100 * per_class[i] for i in order]
    bars = ax.bar(range(len(order)), values, color=[GROUP_COLORS[groups[i]] for i in order])
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([f"{class_names[i]}\n({counts[i]})" for i in order], rotation=60,
                       fontsize=7, ha="right")
    for bar, value in zip(bars, values):
        if np.isfinite(value):
            ax.text(bar.get_x() + bar.get_width() / 2, value + 1, f"{value:.0f}",
                    ha="center", fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("class (training images), sorted by size")
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUP_COLORS.values()]
    ax.legend(handles, ["many (>100)", "medium (20-100)", "few (<20)"], fontsize=7)
    return _save(fig, path)


def plot_groups(path, report, title):
    plt = _pyplot()
    keys = [k for k in ("many", "medium", "few") if report.get(k) is not None] + ["top1"]
    values = [100 * report[k] for k in keys]
    colors = [GROUP_COLORS.get(k, "#555555") for k in keys]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    bars = ax.bar(["all" if k == "top1" else k for k in keys], values, color=colors)
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 1, f"{value:.1f}", ha="center")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    return _save(fig, path)


def plot_history(path, history, title):
    plt = _pyplot()
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in history:
            axes[0].plot(epochs, history[key], style, label=key)
    for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
        if key in history:
            axes[1].plot(epochs, 100 * np.asarray(history[key], float), style, label=key)
    if "learning_rate" in history:
        axes[2].plot(epochs, history["learning_rate"], "-o", markersize=3)
        axes[2].set_yscale("log")
    for ax, label in zip(axes, ("loss", "accuracy (%)", "learning rate")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_margins(path, margins, labels, counts, title):
    plt = _pyplot()
    groups = np.asarray(shot_group_of(counts))[labels]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(float(np.min(margins)), float(np.max(margins)) + 1e-6, 50)
    for group, color in GROUP_COLORS.items():
        selected = margins[groups == group]
        if selected.size:
            ax.hist(selected, bins=bins, alpha=0.55, color=color, density=True,
                    label=f"{group} (mean {selected.mean():.2f})")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("sample margin  z_y - max_{j != y} z_j  (test set)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def embed_2d(features, method="auto", seed=0):
    """2-D coordinates of ``features`` and the method used."""
    features = np.asarray(features, dtype="float64")
    if method in ("auto", "umap"):
        try:
            import umap
            return umap.UMAP(random_state=seed).fit_transform(features), "UMAP"
        except ImportError:
            if method == "umap":
                raise
    if method in ("auto", "tsne") and len(features) > 5:
        from sklearn.manifold import TSNE
        perplexity = min(30.0, (len(features) - 1) / 3.0)
        return TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(
            features), "t-SNE"
    from sklearn.decomposition import PCA
    return PCA(2, random_state=seed).fit_transform(features), "PCA"


def plot_embedding(path, features, labels, class_names, title, method="auto", seed=0,
                   max_points=2000):
    plt = _pyplot()
    rng = np.random.RandomState(seed)
    index = np.arange(len(labels))
    if len(index) > max_points:
        index = np.sort(rng.choice(index, max_points, replace=False))
    coords, used = embed_2d(features[index], method, seed)
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        mask = labels[index] == c
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=4, color=cmap(c % cmap.N),
                       label=name)
    ax.set_title(f"{title}\npenultimate features, {used}")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(class_names) <= 20:
        ax.legend(fontsize=6, markerscale=3, loc="best")
    return _save(fig, path), used


def plot_all(folder, report, history, logits, features, labels, class_counts, class_names,
             title, embedding="auto", seed=0):
    """Writes every figure into ``folder``; returns ``{name: path}``."""
    import pathlib
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    logits = np.asarray(logits, dtype="float64")
    labels = np.asarray(labels, dtype=int)
    target = logits[np.arange(len(labels)), labels]
    others = logits.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    margins = target - others.max(axis=1)
    paths = {
        "per_class_accuracy": plot_per_class(folder / "per_class_accuracy.png",
                                             report["per_class_accuracy"], class_counts,
                                             class_names, title),
        "shot_groups": plot_groups(folder / "shot_groups.png", report, title),
        "training_curves": plot_history(folder / "training_curves.png", history, title),
        "sample_margins": plot_margins(folder / "sample_margins.png", margins, labels,
                                       class_counts, title),
    }
    if embedding != "none":
        paths["embedding"], _ = plot_embedding(folder / "embedding.png", features, labels,
                                               class_names, title, embedding, seed)
    return paths
