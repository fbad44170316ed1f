"""Sampling schedulers (PNDM as SD runs it, DDIM, DPM-Solver++ 2M) as pure fp32 jnp, for `lax.fori_loop`.

Each follows PyTorch diffusers' arithmetic, quirks included (the parity tests hold us to it): PNDM with
`skip_prk_steps` repeats its first timestep and averages the first two noise predictions; PNDM and DDIM
step back by num_train_timesteps // steps whatever the spacing; DPM-Solver++ ends at sigma 0 (PyTorch's
default `final_sigmas_type="zero"`) or at sigma_min.

A scheduler is static (built on the host from the checkpoint's scheduler/ config). The loop calls
`step(state, i, model_output, sample)` with the index i into `timesteps(steps)` and carries `state`, a
small pytree (previous model outputs and a count of steps taken, so img2img may start anywhere).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import UserError

SPACINGS = ("leading", "linspace", "trailing")


def _linspace_f32(start: float, end: float, n: int) -> np.ndarray:
  """torch.linspace in float32: from the start for the first half, from the end for the rest."""
  start, end = np.float32(start), np.float32(end)
  step = (end - start) / np.float32(n - 1)
  idx = np.arange(n)
  front = start + step * idx.astype(np.float32)
  back = end - step * (n - 1 - idx).astype(np.float32)
  return np.where(idx < n // 2, front, back).astype(np.float32)


def betas(config: dict, where: str = "scheduler") -> np.ndarray:
  """The training noise schedule's betas (float32, as diffusers computes them)."""
  n = int(config.get("num_train_timesteps", 1000))
  if config.get("trained_betas") is not None:
    return np.asarray(config["trained_betas"], np.float32)
  schedule = config.get("beta_schedule", "linear")
  start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
  if schedule == "linear":
    return _linspace_f32(start, end, n)
  if schedule == "scaled_linear":
    return np.square(_linspace_f32(start ** 0.5, end ** 0.5, n))
  if schedule == "squaredcos_cap_v2":
    bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return np.asarray([min(1 - bar((i + 1) / n) / bar(i / n), 0.999) for i in range(n)], np.float32)
  raise UserError(f"{where}: unsupported beta_schedule {schedule!r} (jaxaug has linear, scaled_linear, "
                  "squaredcos_cap_v2)")


def alphas_cumprod(config: dict, where: str = "scheduler") -> np.ndarray:
  return np.cumprod(1.0 - betas(config, where), dtype=np.float32)


def timesteps_for(config: dict, steps: int, kind: str) -> np.ndarray:
  """The inference timesteps, as diffusers' set_timesteps makes them (int32)."""
  n = int(config.get("num_train_timesteps", 1000))
  spacing = config.get("timestep_spacing") or ("linspace" if kind == "dpm++" else "leading")
  offset = int(config.get("steps_offset", 0))
  count = steps + 1 if kind == "dpm++" else steps  # DPM-Solver spaces steps + 1 points and drops the last
  if spacing == "linspace":
    t = np.linspace(0, n - 1, count).round()[::-1]
  elif spacing == "leading":
    t = (np.arange(count) * (n // count)).round()[::-1] + offset
  elif spacing == "trailing":
    t = np.round(np.arange(n, 0, -n / steps)) - 1
  else:
    raise UserError(f"unsupported timestep_spacing {spacing!r}; use one of {', '.join(SPACINGS)}")
  t = t.astype(np.int64)
  if kind == "dpm++" and spacing != "trailing":
    t = t[:-1]
  if kind == "pndm":  # skip_prk_steps: the first timestep twice (PLMS warm-up), then the rest
    up = t[::-1]
    t = np.concatenate([up[:-1], up[-2:-1], up[-1:]])[::-1]
  return t.astype(np.int32)


def _check(config: dict, kind: str):
  for flag in ("thresholding", "rescale_betas_zero_snr", "use_karras_sigmas", "use_exponential_sigmas",
               "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"):
    if config.get(flag):
      raise UserError(f"the scheduler config sets {flag}=true, which jaxaug's {kind} scheduler does not support")
  if kind == "pndm" and not config.get("skip_prk_steps", False):
    raise UserError("PNDM with skip_prk_steps=false (Runge-Kutta warm-up) is not supported; SD checkpoints set it "
                    "true (or use --config.sampler.scheduler=ddim)")
  if kind == "dpm++":
    if config.get("algorithm_type", "dpmsolver++") != "dpmsolver++":
      raise UserError(f"DPM-Solver algorithm_type {config['algorithm_type']!r} is not supported (jaxaug: dpmsolver++)")
    if config.get("solver_order", 2) not in (1, 2):
      raise UserError(f"DPM-Solver++ solver_order {config['solver_order']} is not supported (jaxaug: 1 or 2)")
    if config.get("solver_type", "midpoint") not in ("midpoint", "heun"):
      raise UserError(f"DPM-Solver++ solver_type {config['solver_type']!r} is not supported (midpoint or heun)")
    if config.get("final_sigmas_type", "zero") not in ("zero", "sigma_min"):
      raise UserError(f"final_sigmas_type {config['final_sigmas_type']!r} must be 'zero' or 'sigma_min'")
    if config.get("variance_type") is not None or math.isfinite(config.get("lambda_min_clipped", -math.inf)):
      raise UserError("DPM-Solver++ variance_type / lambda_min_clipped are not supported by jaxaug")
  prediction = config.get("prediction_type", "epsilon")
  if prediction not in ("epsilon", "v_prediction", "sample"):
    raise UserError(f"unsupported prediction_type {prediction!r} (epsilon, v_prediction or sample)")


@dataclasses.dataclass(frozen=True, eq=False)
class Scheduler:
  """One of "pndm", "ddim", "dpm++", configured from a diffusers scheduler config."""
  kind: str
  config: dict
  alphas_cumprod: np.ndarray

  init_noise_sigma = 1.0  # all three start from unit Gaussian latents

  @classmethod
  def from_config(cls, kind: str, config: dict) -> "Scheduler":
    if kind not in ("pndm", "ddim", "dpm++"):
      raise UserError(f"unknown scheduler '{kind}'; choose one of pndm, ddim, dpm++")
    _check(config, kind)
    return cls(kind, dict(config), alphas_cumprod(config))

  @property
  def prediction_type(self) -> str:
    return self.config.get("prediction_type", "epsilon")

  @property
  def final_alpha_cumprod(self) -> float:
    # diffusers' defaults differ: DDIM sets alpha to one at the end, PNDM does not
    one = self.config.get("set_alpha_to_one", self.kind == "ddim")
    return 1.0 if one else float(self.alphas_cumprod[0])

  def timesteps(self, steps: int) -> np.ndarray:
    if steps < 1:
      raise UserError(f"sampler steps must be at least 1, not {steps}")
    return timesteps_for(self.config, steps, self.kind)

  def sigmas(self, steps: int) -> np.ndarray:
    """DPM-Solver's sigmas at each timestep and one past the last (0 or sigma_min), float32."""
    ac = self.alphas_cumprod
    all_sigmas = np.asarray(((1 - ac) / ac) ** 0.5, np.float32)
    t = self.timesteps(steps)
    sig = np.interp(t, np.arange(len(all_sigmas)), all_sigmas)
    last = ((1 - ac[0]) / ac[0]) ** 0.5 if self.config.get("final_sigmas_type", "zero") == "sigma_min" else 0.0
    return np.concatenate([sig, [last]]).astype(np.float32)

  def init(self, sample) -> dict[str, Any]:
    """The loop state: a count of steps taken and the model outputs a multistep method remembers."""
    state = {"count": jnp.zeros((), jnp.int32)}
    if self.kind == "pndm":
      state.update(ets=jnp.zeros((3,) + sample.shape, jnp.float32), first_sample=jnp.zeros_like(sample, jnp.float32))
    elif self.kind == "dpm++":
      state.update(previous=jnp.zeros_like(sample, jnp.float32))
    return state

  def add_noise(self, original, noise, t):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (for DPM-Solver, its sigma at timestep t)."""
    abar = jnp.asarray(self.alphas_cumprod)[t]
    return jnp.sqrt(abar) * original + jnp.sqrt(1 - abar) * noise

  def add_noise_at(self, original, noise, steps: int, i: int):
    """img2img's start: the real latents noised to the level of step i of a `steps`-step schedule."""
    if self.kind == "dpm++":
      sigma = jnp.float32(self.sigmas(steps)[i])
      alpha = 1 / jnp.sqrt(sigma ** 2 + 1)
      return alpha * original + sigma * alpha * noise
    return self.add_noise(original, noise, int(self.timesteps(steps)[i]))

  def step(self, state, steps: int, i, model_output, sample):
    """One step from timestep index i (traced or not); returns (previous sample, state)."""
    sample, model_output = sample.astype(jnp.float32), model_output.astype(jnp.float32)
    if self.kind == "pndm":
      return self._pndm(state, steps, i, model_output, sample)
    if self.kind == "ddim":
      t = jnp.asarray(self.timesteps(steps))[i]
      return self._ddim_update(sample, model_output, t, t - self._ratio(steps)), {**state, "count": state["count"] + 1}
    return self._dpm(state, steps, i, model_output, sample)

  def _ratio(self, steps: int) -> int:
    return int(self.config.get("num_train_timesteps", 1000)) // steps

  def _abar(self, t):
    ac = jnp.asarray(self.alphas_cumprod)
    return jnp.where(t >= 0, ac[jnp.maximum(t, 0)], jnp.float32(self.final_alpha_cumprod))

  def _ddim_update(self, sample, model_output, t, prev):
    abar, abar_prev = self._abar(t), self._abar(prev)
    beta = 1 - abar
    if self.prediction_type == "epsilon":
      x0, eps = (sample - beta ** 0.5 * model_output) / abar ** 0.5, model_output
    elif self.prediction_type == "v_prediction":
      x0 = abar ** 0.5 * sample - beta ** 0.5 * model_output
      eps = abar ** 0.5 * model_output + beta ** 0.5 * sample
    else:
      x0 = model_output
      eps = (sample - abar ** 0.5 * x0) / beta ** 0.5
    if self.config.get("clip_sample", False):
      limit = float(self.config.get("clip_sample_range", 1.0))
      x0 = jnp.clip(x0, -limit, limit)
    return abar_prev ** 0.5 * x0 + (1 - abar_prev) ** 0.5 * eps

  def _pndm(self, state, steps, i, eps, sample):
    """PLMS (skip_prk_steps): the counter decides which Adams-Bashforth combination of past outputs."""
    ratio = self._ratio(steps)
    count, ets = state["count"], state["ets"]  # ets[0] is the newest remembered output
    t = jnp.asarray(self.timesteps(steps))[i]
    second = count == 1  # redo the first step's interval with the average of the first two outputs
    t_from = jnp.where(second, t + ratio, t)
    t_to = jnp.where(second, t, t - ratio)
    combos = [
        lambda: eps,
        lambda: (eps + ets[0]) / 2,
        lambda: (3 * eps - ets[0]) / 2,
        lambda: (23 * eps - 16 * ets[0] + 5 * ets[1]) / 12,
        lambda: (1 / 24) * (55 * eps - 59 * ets[0] + 37 * ets[1] - 9 * ets[2]),
    ]
    # count 0 and 1 are the warm-up pair; from count 2 on the history holds count - 1 outputs (not count 1's).
    which = jnp.where(count <= 1, count, jnp.minimum(count, 4))
    combined = jax.lax.switch(which, combos)
    start = jnp.where(second, state["first_sample"], sample)
    prev = self._pndm_update(start, combined, t_from, t_to)
    ets = jnp.where(second, ets, jnp.concatenate([eps[None], ets[:-1]]))
    first_sample = jnp.where(count == 0, sample, state["first_sample"])
    return prev, {"count": count + 1, "ets": ets, "first_sample": first_sample}

  def _pndm_update(self, sample, eps, t, prev):
    """PNDM's formula (9): x_prev from x_t and the combined output."""
    abar, abar_prev = self._abar(t), self._abar(prev)
    beta, beta_prev = 1 - abar, 1 - abar_prev
    if self.prediction_type == "v_prediction":
      eps = abar ** 0.5 * eps + beta ** 0.5 * sample
    sample_coeff = (abar_prev / abar) ** 0.5
    denom = abar * beta_prev ** 0.5 + (abar * beta * abar_prev) ** 0.5
    return sample_coeff * sample - (abar_prev - abar) * eps / denom

  def _dpm(self, state, steps, i, model_output, sample):
    sig = jnp.asarray(self.sigmas(steps))
    n = len(self.timesteps(steps))
    def alpha_sigma(s):
      alpha = 1 / (s ** 2 + 1) ** 0.5
      return alpha, s * alpha

    alpha_s0, sigma_s0 = alpha_sigma(sig[i])
    if self.prediction_type == "epsilon":
      x0 = (sample - sigma_s0 * model_output) / alpha_s0
    elif self.prediction_type == "v_prediction":
      x0 = alpha_s0 * sample - sigma_s0 * model_output
    else:
      x0 = model_output
    alpha_t, sigma_t = alpha_sigma(sig[i + 1])
    alpha_s1, sigma_s1 = alpha_sigma(sig[i - 1])
    lam = lambda a, s: jnp.log(a) - jnp.log(s)  # noqa: E731
    h = lam(alpha_t, sigma_t) - lam(alpha_s0, sigma_s0)
    first = (sigma_t / sigma_s0) * sample - (alpha_t * (jnp.exp(-h) - 1.0)) * x0
    r0 = (lam(alpha_s0, sigma_s0) - lam(alpha_s1, sigma_s1)) / h
    d0, d1 = x0, (1.0 / r0) * (x0 - state["previous"])
    if self.config.get("solver_type", "midpoint") == "midpoint":
      second = (sigma_t / sigma_s0) * sample - (alpha_t * (jnp.exp(-h) - 1.0)) * d0 \
          - 0.5 * (alpha_t * (jnp.exp(-h) - 1.0)) * d1
    else:
      second = (sigma_t / sigma_s0) * sample - (alpha_t * (jnp.exp(-h) - 1.0)) * d0 \
          + (alpha_t * ((jnp.exp(-h) - 1.0) / h + 1.0)) * d1
    last = i == n - 1
    lower_final = last & (bool(self.config.get("euler_at_final", False))
                          | (bool(self.config.get("lower_order_final", True)) and n < 15)
                          | (self.config.get("final_sigmas_type", "zero") == "zero"))
    use_first = (self.config.get("solver_order", 2) == 1) | (state["count"] < 1) | lower_final
    prev = jnp.where(use_first, first, second)
    return prev, {"count": state["count"] + 1, "previous": x0}
