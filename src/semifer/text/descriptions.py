"""Class descriptions -> class text embeddings t_c, computed once and cached on disk.

A class is described either by a prompt template (``"A face image of {expression}."``, the
expression word taken from the descriptions file, or the class name itself) or by several
sentences from a YAML file (``class: {word: ..., sentences: [...]}`` or ``class: [...]``), whose
normalised embeddings are averaged. ``descriptions="default"`` is the file shipped with semifer.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources

import torch
import torch.nn.functional as F
import yaml

from semifer.io import atomic_path
from semifer.text.encoders import TextEncoder

DEFAULT_TEMPLATE = "A face image of {expression}."


def default_descriptions_path() -> str:
    return str(resources.files("semifer.text") / "descriptions.yaml")


def load_descriptions(path: str) -> dict[str, dict]:
    """``{class: {"word": str, "sentences": [str, ...]}}`` from a YAML file; raises naming the
    file and the entry when the layout is not the expected one."""
    path = default_descriptions_path() if path == "default" else path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"descriptions file {path!r} does not exist")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping class -> {{word, sentences}} or class -> [sentences]")
    out = {}
    for name, entry in raw.items():
        if isinstance(entry, list):
            entry = {"sentences": entry}
        if isinstance(entry, str):
            entry = {"sentences": [entry]}
        sents = entry.get("sentences", []) if isinstance(entry, dict) else None
        if not sents or not all(isinstance(s, str) and s.strip() for s in sents):
            raise ValueError(f"{path}: class {name!r} needs a non-empty list of sentences, got {entry!r}")
        out[str(name).lower()] = {"word": str(entry.get("word", name)), "sentences": list(sents)}
    return out


def class_texts(classes, template: str | None = DEFAULT_TEMPLATE, descriptions: str | None = None) -> list[list[str]]:
    """The sentences describing each class, in ``classes`` order.

    ``descriptions`` None: one prompt per class from ``template`` and the class name (the word
    from the default file when the class is a known expression). A file: its sentences, with
    ``template`` (when given) adding one prompt more per class."""
    if descriptions is None and not template:
        raise ValueError("give a prompt template or a descriptions file for the class texts")
    if template and "{expression}" not in template:
        raise ValueError(f"prompt template {template!r} must contain '{{expression}}'")
    table = load_descriptions(descriptions or "default")
    texts = []
    for c in classes:
        entry = table.get(str(c).lower())
        if descriptions is not None and entry is None:
            raise ValueError(f"descriptions file {descriptions!r} has no entry for class {c!r}; "
                             f"it describes: {', '.join(sorted(table))}")
        prompt = [template.format(expression=entry["word"] if entry else c)] if template else []
        sents = entry["sentences"] if descriptions is not None else []
        texts.append(list(dict.fromkeys(prompt + sents)))   # de-duplicated, order kept
    return texts


def _cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    root = os.environ.get("SEMIFER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "semifer")
    return os.path.join(root, "text")


def class_embeddings(encoder: TextEncoder, texts: list[list[str]], cache_dir: str | None = None,
                     use_cache: bool = True) -> torch.Tensor:
    """t_c = normalise(mean_i normalise(E(s_{c,i}))) [K, d], cached under a hash of the encoder's
    identity and every sentence (a changed sentence or encoder gives a new file)."""
    use_cache = use_cache and encoder.cacheable
    flat = [s for group in texts for s in group]
    key = hashlib.sha256(json.dumps({"id": encoder.identity(), "texts": texts}, sort_keys=True).encode()).hexdigest()
    path = os.path.join(_cache_dir(cache_dir), f"{encoder.name}-{key[:24]}.pt")
    if use_cache and os.path.exists(path):
        emb = torch.load(path, map_location="cpu", weights_only=True)
        if emb.shape[0] == len(texts):
            return emb
    sent = encoder.encode(flat)                                         # [sum n_c, d], unit rows
    groups = sent.split([len(g) for g in texts])
    emb = F.normalize(torch.stack([g.mean(0) for g in groups]), dim=-1)  # [K, d]
    if use_cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:  # the ranks of one run may write the same file
            torch.save(emb, tmp)
    return emb
