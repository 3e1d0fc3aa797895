"""Masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022),
stage I of SSFER (Song et al., arXiv 2410.17622; docs/methods.md section 1).

The encoder IS the classifier's backbone: a timm ``VisionTransformer`` (semifer's ``vit_*_p8`` or
any timm ViT), used through its own ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks`` and
``norm``. Its state dict therefore loads unchanged into ``FERClassifier.backbone``
(``semifer train model.init=...``). The light decoder exists only here and is thrown away.

Symbols: N images, L = (H/p)(W/p) patches, D encoder width, D' decoder width, r mask ratio.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, L, p*p*C], patches in row-major order, pixels (row, col, channel)."""
    n, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, c: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: [N, L, p*p*C] -> [N, C, H, W]."""
    n = x.shape[0]
    x = x.reshape(n, h // p, w // p, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, h, w)


def draw_mask(n: int, length: int, mask_ratio: float, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which tokens each image keeps: a per-sample shuffle by argsort of uniform noise, as MAE.

    -> (ids_keep [N, L_keep], mask [N, L] with 1 = removed, in the original order, ids_restore [N, L])."""
    keep = int(length * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} leaves no visible patch out of {length}")
    noise = torch.rand(n, length, device=device)                    # [N, L]
    ids_shuffle = noise.argsort(1)                                  # ascending: small = kept
    ids_restore = ids_shuffle.argsort(1)
    mask = torch.ones(n, length, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], mask.gather(1, ids_restore), ids_restore


def keep_tokens(x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """x [N, L, D] -> the kept tokens [N, L_keep, D]."""
    return x.gather(1, ids_keep[:, :, None].expand(-1, -1, x.shape[2]))


def random_masking(x: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random (1 - r) share of the tokens of each image.

    x [N, L, D] -> (x_visible [N, L_keep, D], mask [N, L] with 1 = removed, ids_restore [N, L])."""
    ids_keep, mask, ids_restore = draw_mask(x.shape[0], x.shape[1], mask_ratio, x.device)
    return keep_tokens(x, ids_keep), mask, ids_restore


def blank_removed(imgs: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Zero the pixels of the removed patches (mask [N, L], 1 = removed) of imgs [N, C, H, W]."""
    n, _, h, w = imgs.shape
    m = mask.reshape(n, 1, *grid)
    m = m.repeat_interleave(h // grid[0], 2).repeat_interleave(w // grid[1], 3)
    return imgs * (1 - m).to(imgs.dtype)


def decoder_shape(encoder: nn.Module, dim: int = 0, depth: int = 0, heads: int = 0) -> tuple[int, int, int]:
    """The decoder's (width D', blocks, heads); each 0 is scaled to the encoder.

    MAE's decoder (512 wide, 8 blocks, 16 heads) was sized for ViT-L (1024 x 24), where it costs
    under a tenth of the encoder per token. Behind a 2.7 M-parameter ViT-Tiny it would hold nine
    times the encoder's weights (a 332 MB checkpoint). Scaled instead: width min(D, 512); heads
    the encoder's at its own width, else 16 (MAE's 32 per head); blocks min(8, ceil(depth / 2)),
    which keeps a full-width decoder at about half the encoder. MAE's Table 1 finds fine-tuning
    accuracy flat in decoder depth (1 block 84.8 %, 8 blocks 84.9 %) and width (256: 84.8 %).
    The SSFER recipes state the paper's 512 x 8 x 16 explicitly."""
    width, n_blocks = encoder.embed_dim, len(encoder.blocks)
    dim = dim or min(width, 512)
    heads = heads or (encoder.blocks[0].attn.num_heads if dim == width else 16)
    depth = depth or min(8, -(-n_blocks // 2))
    if dim % heads:
        raise ValueError(f"MAE decoder width {dim} is not divisible by its {heads} heads")
    return dim, depth, heads


class MaskedAutoencoder(nn.Module):
    """MAE around a ViT ``encoder``. ``forward(imgs)`` -> (loss, pred [N, L, p*p*C], mask [N, L]).

    ``norm_pix_loss``: the target of each patch is its pixels normalised by the patch's own mean
    and variance (MAE's better setting, and SSFER's paper); False regresses raw pixels (SSFER's
    released code). The loss is the MSE averaged over masked patches only. ``decoder_dim``,
    ``decoder_depth``, ``decoder_heads``: 0 = scaled to the encoder (:func:`decoder_shape`)."""

    def __init__(self, encoder: nn.Module, mask_ratio: float = 0.75, decoder_dim: int = 0,
                 decoder_depth: int = 0, decoder_heads: int = 0, mlp_ratio: float = 4.0,
                 norm_pix_loss: bool = True):
        super().__init__()
        for need in ("patch_embed", "blocks", "norm", "pos_embed"):
            if getattr(encoder, need, None) is None:
                raise ValueError(f"the MAE encoder must be a timm VisionTransformer with {need!r}; "
                                 f"got {type(encoder).__name__}")
        if getattr(encoder, "num_reg_tokens", 0) or getattr(encoder, "dynamic_img_size", False):
            raise ValueError("the MAE encoder must not use register tokens or dynamic image size")
        self.encoder = encoder
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        pe = encoder.patch_embed
        self.p = pe.patch_size[0]
        self.grid = tuple(pe.grid_size)
        self.in_chans = getattr(pe, "in_chans", None) or pe.proj.in_channels
        dim = encoder.embed_dim
        decoder_dim, decoder_depth, decoder_heads = decoder_shape(encoder, decoder_dim, decoder_depth,
                                                                  decoder_heads)

        # ---- light decoder (MAE: 8 blocks, width 512, 16 heads; here scaled to the encoder) --
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Fixed 2-D sin-cos positions for the decoder, as MAE; a zero slot for the class token.
        pos = build_sincos2d_pos_embed(list(self.grid), decoder_dim)            # [L, D']
        self.register_buffer("decoder_pos_embed", torch.cat([torch.zeros(1, decoder_dim), pos])[None],
                             persistent=False)                                    # [1, 1 + L, D']
        self.decoder_blocks = nn.Sequential(*[Block(decoder_dim, decoder_heads, mlp_ratio, qkv_bias=True)
                                              for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.p * self.p * self.in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_encoder(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed, add positions, drop r of the patches, run the encoder on the rest.
        -> (latent [N, 1 + L_keep, D] with the class token first, mask [N, L], ids_restore [N, L])."""
        enc = self.encoder
        n_prefix = 0 if enc.no_embed_class else enc.num_prefix_tokens
        if getattr(enc.patch_embed, "masks_pixels", False):
            # A conv stem reads across patch borders: blank the removed patches before it, so
            # no visible token sees them (models/conv_stem.py), then keep the visible tokens.
            ids_keep, mask, ids_restore = draw_mask(len(imgs), self.grid[0] * self.grid[1],
                                                    self.mask_ratio, imgs.device)
            x = enc.patch_embed(blank_removed(imgs, mask, self.grid)) + enc.pos_embed[:, n_prefix:]
            x = keep_tokens(x, ids_keep)                            # [N, L_keep, D]
        else:
            x = enc.patch_embed(imgs) + enc.pos_embed[:, n_prefix:]  # [N, L, D]
            x, mask, ids_restore = random_masking(x, self.mask_ratio)  # [N, L_keep, D]
        if enc.cls_token is not None:
            cls = enc.cls_token + (enc.pos_embed[:, :1] if n_prefix else 0)
            x = torch.cat([cls.expand(len(x), -1, -1), x], 1)      # [N, 1 + L_keep, D]
        x = enc.norm(enc.blocks(enc.norm_pre(x)))
        return x, mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Visible tokens + mask tokens back in the original order -> pixels [N, L, p*p*C]."""
        n_prefix = 1 if self.encoder.cls_token is not None else 0
        x = self.decoder_embed(latent)                              # [N, n_prefix + L_keep, D']
        n, length = ids_restore.shape
        masked = self.mask_token.expand(n, length - (x.shape[1] - n_prefix), -1)
        tokens = torch.cat([x[:, n_prefix:], masked], 1)           # [N, L, D'] shuffled
        tokens = tokens.gather(1, ids_restore[:, :, None].expand(-1, -1, x.shape[2]))  # unshuffled
        x = torch.cat([x[:, :n_prefix], tokens], 1) + self.decoder_pos_embed[:, 1 - n_prefix:]
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, n_prefix:]                  # [N, L, p*p*C]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE on the masked patches: sum_l mask_l mean_k (pred - target)^2 / sum_l mask_l."""
        target = patchify(imgs, self.p)                             # [N, L, p*p*C]
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(-1)              # [N, L]
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, mask, ids_restore = self.forward_encoder(imgs)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input, reconstruction with the visible patches pasted back), both [N, C, H, W]
        in the input's scale; a norm-pix prediction is mapped back with each patch's statistics."""
        target = patchify(imgs, self.p)
        pred = pred.float()
        if self.norm_pix_loss:
            pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
        m = mask[:, :, None]
        shape = (self.in_chans, *imgs.shape[2:])
        masked = unpatchify(target * (1 - m) + target.min() * m, self.p, *shape)
        recon = unpatchify(target * (1 - m) + pred * m, self.p, *shape)
        return masked, recon
