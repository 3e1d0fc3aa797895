"""``semifer report``: one self-contained HTML page comparing run folders side by side.

Everything is read from what the other commands leave in a run folder: ``summary.json`` and
``metrics.jsonl`` (training), ``test_*.png`` / ``eval/*.png`` (confusion, reliability),
``explain/examples.png`` (Grad-CAM), ``attack/*.json`` (FGSM), ``ckpt/*.temperature.json``
(calibration), ``kfold.json`` (a K-fold folder). Images are embedded as base64 data URIs, so the
page can be mailed or archived alone. Missing pieces are left out, never invented.
"""
from __future__ import annotations

import base64
import glob
import html
import io
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = (  # (row title, glob patterns relative to the run folder; first match wins)
    ("confusion matrix (end of training)", ("test_confusion.png",)),
    ("reliability diagram (end of training)", ("test_reliability.png",)),
    ("confusion matrix (semifer eval)", ("eval/*_confusion.png",)),
    ("reliability diagram (semifer eval, with the stored temperature)", ("eval/*_reliability.png",)),
    ("Grad-CAM examples", ("explain/examples.png",)),
)
CSS = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 24px}
td,th{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}th{background:#eee}
td.l,th.l{text-align:left}img{max-width:100%}h2{margin-top:32px}
.figs{table-layout:fixed;width:100%}.figs td{text-align:center}.figs th.l{width:10em}
caption{text-align:left;font-weight:bold;padding:4px 0}"""


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _img_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _png_of(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _table(header: list[str], rows: list[list], caption: str = "") -> str:
    """HTML table; the first column is left-aligned (names), numbers right-aligned."""
    def cell(v, tag, first):
        text = f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))
        return f"<{tag}{' class=l' if first else ''}>{html.escape(text)}</{tag}>"
    out = [f"<table>{f'<caption>{html.escape(caption)}</caption>' if caption else ''}<tr>"]
    out += [cell(h, "th", i == 0) for i, h in enumerate(header)] + ["</tr>"]
    for r in rows:
        out += ["<tr>"] + [cell(v, "td", i == 0) for i, v in enumerate(r)] + ["</tr>"]
    return "".join(out) + "</table>"


def load_run(path: str) -> dict:
    """What the report shows about one run folder."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"run folder {path} does not exist")
    run = {"path": path, "summary": _read_json(os.path.join(path, "summary.json")),
           "metrics": _read_jsonl(os.path.join(path, "metrics.jsonl")),
           "kfold": _read_json(os.path.join(path, "kfold.json")),
           "attacks": [a for a in (_read_json(p) for p in sorted(glob.glob(os.path.join(path, "attack", "*.json"))))
                       if a and "results" in a],
           "calibration": [_read_json(p) for p in sorted(glob.glob(os.path.join(path, "ckpt", "*.temperature.json")))],
           "figures": {}}
    for title, patterns in FIGURES:
        for pattern in patterns:
            hits = sorted(glob.glob(os.path.join(path, pattern)))
            if hits:
                run["figures"][title] = hits[0]
                break
    if not (run["summary"] or run["metrics"] or run["kfold"]):
        raise FileNotFoundError(f"{path} holds no summary.json, metrics.jsonl or kfold.json; is it a semifer run?")
    return run


def _summary_rows(runs: list[dict]) -> list[list]:
    rows = []
    for r in runs:
        k = r["kfold"] or {}
        s = r["summary"] or {"algorithm": "K-fold mean", "accuracy": k.get("accuracy_mean"),
                             "macro_f1": k.get("macro_f1_mean"), "ece": k.get("ece_mean")}
        cal = next((c for c in r["calibration"] if c), None)
        rows.append([r["path"], s.get("algorithm"), s.get("model"), s.get("labels_used"), s.get("iterations"),
                     s.get("accuracy"), s.get("macro_f1"), s.get("ece"), s.get("best_val_accuracy"),
                     f"{s['wall_s'] / 60:.1f}" if "wall_s" in s else None,
                     cal["temperature"] if cal else None,
                     (cal.get("holdout") or cal["fit"])["ece_after"] if cal else None])
    return rows


def learning_curves(runs: list[dict]) -> bytes | None:
    """Periodic accuracy (on the val split, or the test split monitored when a run has none) and
    training loss against step, all runs on the same axes."""
    series = [("eval_accuracy", "periodic accuracy (val, else test)"), ("loss", "training loss"),
              ("mask", "mask ratio (pseudo-labels used)"), ("pl_acc", "accuracy of the pseudo-labels used")]
    present = [(k, t) for k, t in series if any(k in m for r in runs for m in r["metrics"])]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], present):
        for r in runs:
            pts = [(m["step"], m[key]) for m in r["metrics"] if key in m]
            if pts:
                name = os.path.basename(r["path"].rstrip("/")) or r["path"]
                ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, ms=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _png_of(fig)


def build_html(runs: list[dict], title: str = "semifer report") -> str:
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Test metrics</h2>" + _table(
        ["run", "algorithm", "model", "labels", "iterations", "accuracy", "macro-F1", "ECE", "best val acc",
         "minutes", "temperature", "ECE after T"], _summary_rows(runs)))
    classes = [c for r in runs if r["summary"] for c in r["summary"].get("per_class_recall", {})]
    classes = list(dict.fromkeys(classes))
    if classes:
        rows = [[c] + [(r["summary"] or {}).get("per_class_recall", {}).get(c) for r in runs] for c in classes]
        parts.append("<h2>Per-class recall</h2>" + _table(["class"] + [r["path"] for r in runs], rows))
    curves = learning_curves(runs)
    if curves:
        parts.append("<h2>Learning curves</h2>" + _img_tag(curves, "learning curves"))
    for r in runs:
        if r["kfold"]:
            k = r["kfold"]
            rows = [[f"fold {x['fold']}", x["num_images"], x["accuracy"], x["macro_f1"], x.get("ece")]
                    for x in k["rows"]]
            rows.append(["mean ± std", None, f"{k['accuracy_mean']:.4f} ± {k['accuracy_std']:.4f}",
                         f"{k['macro_f1_mean']:.4f} ± {k['macro_f1_std']:.4f}",
                         f"{k['ece_mean']:.4f} ± {k['ece_std']:.4f}" if "ece_mean" in k else None])
            parts.append(f"<h2>K-fold: {html.escape(r['path'])}</h2>" +
                         _table(["fold", "test images", "accuracy", "macro-F1", "ECE"], rows))
    attacks = [(r["path"], a) for r in runs for a in r["attacks"]]
    if attacks:
        parts.append("<h2>FGSM accuracy by epsilon (pixel units in [0, 1])</h2>")
        for path, a in attacks:
            eps = a["results"][0]["eps"]
            rows = [[f"{x['region']} ({100 * x['region_share']:.0f}% of pixels)"] + x["accuracy"] for x in a["results"]]
            parts.append(_table(["region"] + [f"eps {e:g}" for e in eps], rows,
                                caption=f"{path} on {a.get('data', '?')} ({a['results'][0]['num_images']} images)"))
    cal = [(r["path"], c) for r in runs for c in r["calibration"] if c]
    if cal:
        rows = []
        for path, c in cal:
            h = c.get("holdout") or c["fit"]
            shown = f"{h['num_images']} {'held out of the fit' if 'holdout' in c else '(the fit set)'}"
            rows.append([path, c["temperature"], f"{c.get('data')} ({c.get('split')})", shown,
                         h["nll_before"], h["nll_after"], h["ece_before"], h["ece_after"]])
        parts.append("<h2>Temperature scaling</h2>" + _table(
            ["run", "T", "fitted on", "images reported", "NLL before", "NLL after", "ECE before", "ECE after"], rows))
    titles = [t for t, _ in FIGURES if any(t in r["figures"] for r in runs)]
    if titles:
        parts.append("<h2>Figures</h2><table class=figs><tr><th class=l></th>" +
                     "".join(f"<th>{html.escape(r['path'])}</th>" for r in runs) + "</tr>")
        for t in titles:
            cells = []
            for r in runs:
                p = r["figures"].get(t)
                cells.append(f"<td>{_img_tag(open(p, 'rb').read(), t) if p else '-'}</td>")
            parts.append(f"<tr><th class=l>{html.escape(t)}</th>{''.join(cells)}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dirs: list[str], out: str, title: str = "semifer report") -> str:
    html_text = build_html([load_run(p) for p in run_dirs], title)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(html_text)
    return out
