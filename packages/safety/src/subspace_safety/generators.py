"""Three small image generators for 28×28 greyscale data (Fashion-MNIST), trainable on CPU.

They produce the "fake" images of the Effort evaluation (detect generated images, train on
one generator, test on the unseen others), so they are deliberately different families:

- :class:`SmallVAE` — convolutional VAE (Kingma & Welling 2014), Bernoulli decoder, ELBO;
- :class:`SmallDCGAN` — DCGAN (Radford et al. 2016), non-saturating GAN loss;
- :class:`SmallDDPM` — ε-prediction DDPM (Ho et al. 2020) with a two-level U-Net and a
  linear β schedule rescaled to ``timesteps`` steps (Nichol & Dhariwal 2021's rescaling).

Common API: ``fit(images, steps=..., batch_size=..., lr=..., seed=...) -> list[float]`` (the
per-step loss; for the GAN the generator's) and ``sample(n, seed=...) -> float32
[n, 1, 28, 28]`` in ``[0, 1]``. ``images`` are ``uint8 [N, 28, 28]`` (``0..255``) or float
``[N, 28, 28]`` / ``[N, 1, 28, 28]`` in ``[0, 1]``. :data:`GENERATORS` maps names to classes.
At the default sizes 2,000 steps at batch 64 take minutes on one CPU thread (DDPM the
longest: ~5x the VAE per step, plus ``timesteps`` network calls per sample batch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GENERATORS", "SmallDCGAN", "SmallDDPM", "SmallVAE", "as_unit_images"]

SIDE = 28


def as_unit_images(images: object) -> torch.Tensor:
    """``images`` as float32 ``[N, 1, 28, 28]`` in ``[0, 1]`` (see the module docstring)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images: expected a torch.Tensor, got {type(images).__name__}")
    x = images
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, SIDE, SIDE):
        raise ValueError(f"images: expected [N, 28, 28] or [N, 1, 28, 28], got "
                         f"{tuple(images.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.dtype.is_floating_point:
        raise TypeError(f"images: expected uint8 or a floating dtype, got {x.dtype}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError("images: expected float pixels in [0, 1] (or uint8 0..255)")
    return x.float()


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _batches(x: torch.Tensor, steps: int, batch_size: int, gen: torch.Generator):
    """``steps`` random mini-batches (sampled with replacement across epochs)."""
    for _ in range(steps):
        yield x[torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=gen)]


class SmallVAE(nn.Module):
    """Conv VAE: ``[N, 1, 28, 28] -> latent (μ, log σ²) [N, latent_dim] -> logits [N, 1, 28, 28]``."""

    def __init__(self, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        self.latent_dim = _check_count("latent_dim", latent_dim)
        w = _check_count("width", width)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.ReLU(),            # 14x14
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),        # 7x7
            nn.Flatten(), nn.Linear(2 * w * 49, 2 * latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * w * 49), nn.ReLU(), nn.Unflatten(1, (2 * w, 7, 7)),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` [N, 1, 28, 28] in [0, 1] -> (reconstruction logits, μ, log σ²)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per image (nats), averaged over the batch."""
        logits, mu, logvar = self(x)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (recon + kl) / x.shape[0]

    def fit(self, images: torch.Tensor, *, steps: int = 2000, batch_size: int = 64,
            lr: float = 1e-3, seed: int = 0) -> list[float]:
        x = as_unit_images(images)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # the reparametrisation noise
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        history = []
        for batch in _batches(x, _check_count("steps", steps), batch_size, gen):
            loss = self.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        return history

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0) -> torch.Tensor:
        """``n`` images float32 [n, 1, 28, 28]: Bernoulli means of decoded prior draws."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(_check_count("n", n), self.latent_dim, generator=gen)
        self.eval()
        return torch.sigmoid(self.decoder(z))


class SmallDCGAN(nn.Module):
    """DCGAN: ``generator`` ``z [N, latent_dim] -> [N, 1, 28, 28]`` in ``[-1, 1]`` (tanh),
    ``discriminator`` ``[N, 1, 28, 28] -> logit [N]``."""

    def __init__(self, latent_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.latent_dim = _check_count("latent_dim", latent_dim)
        w = _check_count("width", width)
        self.generator = nn.Sequential(
            nn.Linear(latent_dim, 2 * w * 49), nn.Unflatten(1, (2 * w, 7, 7)),
            nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, 2, 1), nn.Tanh())
        self.discriminator = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * w * 49, 1), nn.Flatten(0))

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``−log D(x) − log(1 − D(G(z)))`` averaged; ``real``/``fake`` [N, 1, 28, 28] in
        [-1, 1] (detach ``fake`` to leave the generator alone)."""
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating ``−log D(G(z))`` (stronger early gradients than minimising
        ``log(1 − D(G(z)))``), averaged."""
        logits = self.discriminator(fake)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def fit(self, images: torch.Tensor, *, steps: int = 2000, batch_size: int = 64,
            lr: float = 2e-4, seed: int = 0) -> list[float]:
        """Alternating updates (one discriminator, one generator step per batch) with the
        non-saturating loss; Adam with β₁ = 0.5 as in DCGAN. Returns the generator losses."""
        x = as_unit_images(images) * 2 - 1
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.train()
        history = []
        for real in _batches(x, _check_count("steps", steps), batch_size, gen):
            z = torch.randn(real.shape[0], self.latent_dim, generator=gen)
            fake = self.generator(z)
            d_loss = self.discriminator_loss(real, fake.detach())
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = self.generator_loss(fake)
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            history.append(float(g_loss.detach()))
        return history

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0) -> torch.Tensor:
        """``n`` images float32 [n, 1, 28, 28] in [0, 1]."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(_check_count("n", n), self.latent_dim, generator=gen)
        self.eval()
        return (self.generator(z) + 1) / 2


class _ResBlock(nn.Module):
    """GroupNorm–SiLU–conv ×2 with the time embedding added in between; 1×1 skip on width
    change. ``[N, c_in, H, W], [N, t_dim] -> [N, c_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int, t_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(t)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class _UNet(nn.Module):
    """ε-predictor: 28 -> 14 -> 7 and back with skip connections."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w, t_dim = width, 4 * width
        self.t_dim = t_dim
        self.time_mlp = nn.Sequential(nn.Linear(w, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = nn.Conv2d(1, w, 3, 1, 1)
        self.down1, self.pool1 = _ResBlock(w, w, t_dim), nn.Conv2d(w, 2 * w, 3, 2, 1)
        self.down2, self.pool2 = _ResBlock(2 * w, 2 * w, t_dim), nn.Conv2d(2 * w, 2 * w, 3, 2, 1)
        self.mid = _ResBlock(2 * w, 2 * w, t_dim)
        self.up2 = nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1)
        self.dec2 = _ResBlock(4 * w, 2 * w, t_dim)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.dec1 = _ResBlock(2 * w, w, t_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, 1, 3, 1, 1))
        self.width = w

    def _embed(self, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / half)
        angles = t.float()[:, None] * freqs[None]
        return self.time_mlp(torch.cat([angles.sin(), angles.cos()], dim=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self._embed(t)
        h1 = self.down1(self.inp(x), temb)                 # 28
        h2 = self.down2(self.pool1(h1), temb)              # 14
        h = self.mid(self.pool2(h2), temb)                 # 7
        h = self.dec2(torch.cat([self.up2(h), h2], 1), temb)
        h = self.dec1(torch.cat([self.up1(h), h1], 1), temb)
        return self.out(h)


class SmallDDPM(nn.Module):
    """DDPM on ``[-1, 1]`` pixels: ``q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)``, the U-Net
    predicts the noise ``ε``; ``β_t`` linear from ``1e-4·1000/T`` to ``0.02·1000/T``."""

    def __init__(self, timesteps: int = 200, width: int = 16) -> None:
        super().__init__()
        self.timesteps = _check_count("timesteps", timesteps)
        if width % 16:
            raise ValueError(f"width: expected a multiple of 16 (GroupNorm(8) on width and "
                             f"an even time embedding), got {width!r}")
        self.net = _UNet(width)
        scale = 1000 / timesteps
        betas = torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), timesteps,
                               dtype=torch.float64)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alpha_bars", torch.cumprod(1 - betas, 0).float())

    def loss(self, x0: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Simple loss ``E‖ε − ε_θ(x_t, t)‖²`` for ``x0`` [N, 1, 28, 28] in [-1, 1]."""
        t = torch.randint(0, self.timesteps, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = self.alpha_bars[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(self.net(xt, t), noise)

    def fit(self, images: torch.Tensor, *, steps: int = 2000, batch_size: int = 64,
            lr: float = 2e-3, seed: int = 0) -> list[float]:
        x = as_unit_images(images) * 2 - 1
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        history = []
        for batch in _batches(x, _check_count("steps", steps), batch_size, gen):
            loss = self.loss(batch, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        return history

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0) -> torch.Tensor:
        """Ancestral sampling (``σ_t² = β_t``) from pure noise; float32 [n, 1, 28, 28] in
        [0, 1]."""
        gen = torch.Generator().manual_seed(seed)
        self.eval()
        x = torch.randn(_check_count("n", n), 1, SIDE, SIDE, generator=gen)
        for step in reversed(range(self.timesteps)):
            t = torch.full((n,), step, dtype=torch.long)
            beta, a_bar = self.betas[step], self.alpha_bars[step]
            eps = self.net(x, t)
            x = (x - beta / (1 - a_bar).sqrt() * eps) / (1 - beta).sqrt()
            if step > 0:
                x = x + beta.sqrt() * torch.randn(x.shape, generator=gen)
        return ((x.clamp(-1, 1) + 1) / 2).float()


#: Generator name -> class (the Effort evaluation trains one of each).
GENERATORS: dict[str, type[nn.Module]] = {
    "vae": SmallVAE,
    "dcgan": SmallDCGAN,
    "ddpm": SmallDDPM,
}
