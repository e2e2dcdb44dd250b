"""The masked autoencoder itself (He et al., 2022): patches and masks, the model around a
ViT's own encoder, and the reconstruction picture. Training it is vitedge.train.mae.

Per image, a random 75% of the patches are hidden (a per-sample argsort of uniform noise, as in
the paper, so every image keeps exactly round(L * 0.25) patches). The encoder - the model's own
patch embedding, position embedding, CLS token, blocks and final norm - runs on the visible
patches (+ CLS) only. A light decoder (its own width and depth) gets the encoded tokens put back
in image order with a shared learned mask token at every hidden position, adds its own position
embedding (fixed 2-D sin-cos, as in the paper) and predicts the pixels of every patch. The loss
is the MSE against per-patch normalised pixels (each patch's mean/variance removed: "norm-pix",
the paper's better target), averaged over the *hidden* patches only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitedge.errors import UsageError
from vitedge.fsutil import atomic_file

# -- patches and masks ----------------------------------------------------------------------------


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, p*p*C), patches in row-major order (the patch embedding's order)."""
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, h: int, w: int, c: int = 3) -> torch.Tensor:
    """(N, L, p*p*C) -> (N, C, H, W); the inverse of `patchify`."""
    n = x.shape[0]
    x = x.reshape(n, h // p, w // p, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)


def random_masking(n: int, num_patches: int, mask_ratio: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masks. Returns (ids_keep (N, K), mask (N, L) with 1 = hidden,
    ids_restore (N, L)); K = L - round(L * mask_ratio), the same for every image."""
    n_mask = int(round(num_patches * mask_ratio))
    n_keep = num_patches - n_mask
    if not 0 < n_keep < num_patches:
        raise UsageError(f"--mask-ratio {mask_ratio} hides {n_mask} of {num_patches} patches; "
                         "at least one must stay visible and one hidden")
    noise = torch.rand(n, num_patches, generator=generator)
    ids_shuffle = noise.argsort(dim=1)  # ascending: the first n_keep are kept
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(n, num_patches)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_shuffle[:, :n_keep], mask, ids_restore


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (1, [1 +] grid*grid, dim), the MAE paper's choice."""
    if dim % 4:
        raise UsageError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                            torch.arange(grid, dtype=torch.float64), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def one(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([one(xs), one(ys)], dim=1)  # (grid*grid, dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.float()[None]


# -- the model ------------------------------------------------------------------------------------


def check_encoder(module: Any, arch: str) -> None:
    """MAE needs a plain ViT: patch embedding, one CLS token, a position embedding, blocks, norm."""
    needed = ("patch_embed", "cls_token", "pos_embed", "blocks", "norm")
    missing = [a for a in needed if getattr(module, a, None) is None]
    extra = getattr(module, "num_prefix_tokens", 1) != 1 or getattr(module, "no_embed_class", False)
    if missing or extra:
        raise UsageError(f"{arch}: MAE pretraining needs a ViT-family model with one CLS token and "
                         "a position embedding that covers it (e.g. vit-tiny, vit-s16, deit-tiny)"
                         + (f"; this one has no {', '.join(missing)}" if missing else ""))


def patch_size_of(module: Any) -> int:
    pe = module.patch_embed
    if hasattr(pe, "proj") and isinstance(pe.proj, nn.Conv2d):
        return int(pe.proj.kernel_size[0])
    return int(pe.patch_size[0])


class MaskedAutoencoder(nn.Module):
    """A ViT encoder (any vitedge/timm ViT, used as is) + a light MAE decoder."""

    def __init__(self, encoder: Any, img_size: int, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int | None = None,
                 mask_ratio: float = 0.75, norm_pix_loss: bool = True, in_chans: int = 3):
        super().__init__()
        from vitedge.models.vit import Block

        self.encoder = encoder
        self.patch = patch_size_of(encoder)
        self.grid = img_size // self.patch
        self.num_patches = self.grid * self.grid
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.in_chans = in_chans
        dim = encoder.pos_embed.shape[-1]
        if encoder.pos_embed.shape[1] != self.num_patches + 1:
            raise UsageError(f"the encoder's position embedding covers {encoder.pos_embed.shape[1] - 1} "
                             f"patches, not the {self.num_patches} of a {img_size}px image")
        heads = decoder_heads or max(1, decoder_dim // 32)
        if decoder_dim % heads:
            raise UsageError(f"--decoder-dim {decoder_dim} is not divisible by {heads} heads")
        if decoder_depth < 1:
            raise UsageError("--decoder-depth must be >= 1")
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(decoder_dim, self.grid), requires_grad=False)
        self.decoder_blocks = nn.Sequential(*[Block(decoder_dim, heads, 4.0) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def encode(self, imgs: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Visible patches (+ CLS) through the encoder -> (N, 1 + K, D) after its final norm."""
        enc: Any = self.encoder  # a vitedge or timm ViT (duck-typed, see check_encoder)
        x = enc.patch_embed(imgs) + enc.pos_embed[:, 1:]  # (N, L, D)
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))  # (N, K, D)
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = enc.blocks(x)
        return enc.norm(x)

    def decoder_tokens(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """The decoder's input before its position embedding: (N, 1 + L, Dd), the encoded
        tokens back in image order and the mask token at every hidden position."""
        x = self.decoder_embed(latent)
        n, kept = x.shape[0], x.shape[1] - 1
        masks = self.mask_token.expand(n, self.num_patches - kept, -1)
        body = torch.cat([x[:, 1:], masks], dim=1)  # kept first, as in the shuffled order
        body = torch.gather(body, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :1], body], dim=1)

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """-> (N, L, p*p*C) predicted (normalised) pixels of every patch."""
        x = self.decoder_tokens(latent, ids_restore) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, 1:])

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        t = patchify(imgs, self.patch)
        if self.norm_pix_loss:
            mean, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True)
            t = (t - mean) / (var + 1e-6).sqrt()
        return t

    @staticmethod
    def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE per patch, averaged over the hidden patches only (mask 1 = hidden)."""
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None):
        ids_keep, mask, ids_restore = random_masking(imgs.shape[0], self.num_patches,
                                                     self.mask_ratio, generator)
        latent = self.encode(imgs, ids_keep)
        pred = self.decode(latent, ids_restore)
        return self.masked_mse(pred, self.target(imgs), mask), pred, mask


# -- the picture ----------------------------------------------------------------------------------


@torch.inference_mode()
def reconstruct(mae: MaskedAutoencoder, images: np.ndarray, spec: Any, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) -> (masked, reconstructed) uint8 images under seeded masks.

    Masked: hidden patches grey. Reconstructed: the visible patches as they were, the hidden
    ones as predicted (with a norm-pix loss the prediction is per-patch normalised, so each
    hidden patch is un-normalised with its own true mean/std, as the paper's figures do)."""
    from vitedge.calib.preprocess import normalize

    was = mae.training
    mae.eval()
    x = torch.from_numpy(normalize(np.asarray(images), spec))
    g = torch.Generator().manual_seed(seed)
    _, pred, mask = mae(x, g)
    mae.train(was)
    patches = patchify(x, mae.patch)
    if mae.norm_pix_loss:
        mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    m = mask[..., None]
    h, w = x.shape[2:]
    recon = unpatchify(patches * (1 - m) + pred * m, mae.patch, h, w)
    grey = torch.zeros_like(patches) + ((0.5 - torch.tensor(spec.mean)) / torch.tensor(spec.std)).repeat(
        mae.patch * mae.patch)
    masked = unpatchify(patches * (1 - m) + grey * m, mae.patch, h, w)

    def to_uint8(t: torch.Tensor) -> np.ndarray:
        std, mean = torch.tensor(spec.std)[:, None, None], torch.tensor(spec.mean)[:, None, None]
        px = (t * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return np.rint(px * 255).astype(np.uint8)

    return to_uint8(masked), to_uint8(recon), mask.numpy()


def save_reconstructions(mae: MaskedAutoencoder, images: np.ndarray, spec: Any, path: Path,
                         seed: int = 0) -> Path:
    """A PNG grid: one column per image, rows original / masked / reconstructed."""
    from PIL import Image, ImageDraw

    masked, recon, _ = reconstruct(mae, images, spec, seed)
    rows = [("original", np.asarray(images)), (f"masked {mae.mask_ratio:.0%}", masked), ("reconstructed", recon)]
    n, h, w = len(images), images.shape[1], images.shape[2]
    scale = max(1, -(-128 // max(h, w)))  # tiles of at least 128 px: small inputs stay legible
    cell_h, cell_w, label_w, pad = h * scale, w * scale, 110, 4
    canvas = Image.new("RGB", (label_w + n * (cell_w + pad), len(rows) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, imgs) in enumerate(rows):
        y = r * (cell_h + pad)
        draw.text((4, y + cell_h // 2 - 6), name, fill="black")
        for i in range(n):
            tile = Image.fromarray(imgs[i]).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_w + i * (cell_w + pad), y))
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
