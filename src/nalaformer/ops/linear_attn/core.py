"""Normalised linear attention from given feature maps: the O(N) engine of every linear attention kind.

For query features phi_q (G groups, each F wide), key features phi_k (F) and values split into G equal
groups v^g (Dv / G wide each)::

    o_i^g = (sum_j s_ij^g v_j^g / n_i) / (sum_j s_ij^g / n_i + eps),    s_ij^g = phi_q^g(q_i) . phi_k(k_j)

with j over all N keys (n_i = N) or, causal, over j <= i (n_i = i + 1, counted across calls through the
state). G = 1 for most kinds; polarity uses G = 2 (same-sign and opposite-sign maps on two halves of v).
The mean (division by n_i) only matters against eps; it matches NaLa's op and PolaFormer's code.

Rotary position (``rope``), as in NaLa's op: the numerator's features are rotated by their token's angles
(each head_dim-wide chunk of the F features alike), the denominator's are not, so it stays positive:
s_ij^g = R_i phi_q^g(q_i) . R_j phi_k(k_j) in the numerator only. The state's kv holds rotated keys.

Causal compute is chunkwise (exact quadratic part inside a chunk of ``chunk_size`` tokens plus the prefix
state of the chunks before it); the state is the (kv, k_sum, count) triple of :class:`NaLaState` with F
features: kv (S, H, F, Dv), k_sum (S, H, F), count (S,).
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from ..reference import over_segments
from ..rope import apply_rotary
from ..state import NaLaState

__all__ = ["linear_attention", "linear_decode_step", "linear_attention_weights", "empty_state", "rotate_chunks"]

DEFAULT_CHUNK = 64


def empty_state(batch: int, heads: int, features: int, value_dim: int, *, dtype, device) -> NaLaState:
    """A state that has seen no token: kv (S, H, F, Dv), k_sum (S, H, F), count (S,)."""
    return NaLaState(torch.zeros(batch, heads, features, value_dim, dtype=dtype, device=device),
                     torch.zeros(batch, heads, features, dtype=dtype, device=device),
                     torch.zeros(batch, dtype=torch.int64, device=device))


def rotate_chunks(phi: torch.Tensor, rope, head_dim: int, token_dim: int) -> torch.Tensor:
    """Rotate every ``head_dim``-wide chunk of the features phi (..., F) by its token's rotary tables.

    ``rope``: (sin, cos), each (T, P) for the tokens along ``token_dim`` of phi (P = head_dim / 2 per pair,
    or head_dim per column); None returns phi. F must be a multiple of head_dim.
    """
    if rope is None:
        return phi
    if phi.shape[-1] % head_dim:
        raise ValueError(f"rope: features of width {phi.shape[-1]} are not chunks of head_dim {head_dim}")
    x = phi.unflatten(-1, (-1, head_dim))
    ones = (1,) * (x.dim() - token_dim - 2)
    sin, cos = (t.to(phi.dtype).reshape(t.shape[:-1] + ones + t.shape[-1:]) for t in rope)
    return apply_rotary(x, sin, cos).flatten(-2)


def _groups(v: torch.Tensor, groups: int) -> torch.Tensor:
    """(..., Dv) -> (..., G, Dv / G)."""
    return v.unflatten(-1, (groups, v.shape[-1] // groups))


def _noncausal(phq, phk, v, eps, rq, rk):
    """phq (B, H, L, G, F), phk (B, H, L, F), v (B, H, L, G, E) -> o (B, H, L, G, E); rq, rk: the numerator's
    (rotated) features, shaped like phq, phk (None: phq, phk themselves)."""
    rq, rk = (phq, phk) if rq is None else (rq, rk)
    n = phk.shape[2]
    kv = torch.einsum("bhlf,bhlge->bhfge", rk, v) / n
    z = phk.mean(2)  # (B, H, F)
    num = torch.einsum("bhlgf,bhfge->bhlge", rq, kv)
    den = torch.einsum("bhlgf,bhf->bhlg", phq, z)
    return num / (den + eps)[..., None]


def _causal(phq, phk, v, eps, rq, rk, state: NaLaState, chunk: int):
    """Chunkwise causal form; state rows per batch row (kv viewed (B, H, F, G, E)); rq, rk as in _noncausal."""
    b, h, length = phk.shape[:3]
    groups = phq.shape[3]
    rotated = rq is not None
    rq, rk = (rq, rk) if rotated else (phq, phk)
    pad = (-length) % chunk
    if pad:  # zero features add nothing to any sum; padded outputs are dropped below
        phq, phk, v, rq, rk = (F.pad(t, (0, 0) * (t.dim() - 3) + (0, pad)) for t in (phq, phk, v, rq, rk))
    nc = (length + pad) // chunk
    phq, phk, v, rq, rk = (t.unflatten(2, (nc, chunk)) for t in (phq, phk, v, rq, rk))  # (B, H, nc, C, ...)
    kv0 = _groups(state.kv, groups)  # (B, H, F, G, E)
    kv_chunk = torch.einsum("bhcif,bhcige->bhcfge", rk, v)
    ks_chunk = phk.sum(3)  # (B, H, nc, F)
    kv_prev = torch.cat([torch.zeros_like(kv_chunk[:, :, :1]), kv_chunk[:, :, :-1].cumsum(2)], 2) + kv0[:, :, None]
    ks_prev = torch.cat([torch.zeros_like(ks_chunk[:, :, :1]), ks_chunk[:, :, :-1].cumsum(2)], 2)
    ks_prev = ks_prev + state.k_sum[:, :, None]
    mask = torch.ones(chunk, chunk, dtype=torch.bool, device=v.device).tril()
    scores = torch.einsum("bhcigf,bhcjf->bhcgij", phq, phk).masked_fill(~mask, 0)
    num_scores = torch.einsum("bhcigf,bhcjf->bhcgij", rq, rk).masked_fill(~mask, 0) if rotated else scores
    num = torch.einsum("bhcgij,bhcjge->bhcige", num_scores, v) + torch.einsum("bhcigf,bhcfge->bhcige", rq, kv_prev)
    den = scores.sum(-1).transpose(-1, -2) + torch.einsum("bhcigf,bhcf->bhcig", phq, ks_prev)
    pos = torch.arange(1, nc * chunk + 1, device=v.device)
    count = (state.count[:, None] + pos).to(v.dtype).view(b, 1, nc, chunk, 1)
    o = (num / count[..., None]) / (den / count + eps)[..., None]
    o = o.flatten(2, 3)[:, :, :length]
    kv_total = (kv0 + kv_chunk.sum(2)).flatten(-2)
    final = NaLaState(kv_total, state.k_sum + ks_chunk.sum(2), state.count + length)
    return o, final


@functools.cache
def _fla_numerator():
    """fla-core's chunked linear attention (un-normalised), if installed; else None. Looked up once."""
    try:
        from fla.ops.linear_attn import chunk_linear_attn
    except Exception:  # not installed, or no usable GPU stack
        return None
    return chunk_linear_attn


@functools.cache
def _takes_head_first(kernel) -> bool:
    """Older fla-core releases take ``head_first`` (we pass (B, N, H, D): False); newer ones dropped it."""
    return "head_first" in inspect.signature(kernel).parameters


def _fla_causal(phq, phk, v, eps, state: NaLaState, rq, rk):
    """Causal path on fla-core's kernels: its chunked numerator (rq, rk, with our kv state) per group, and the
    denominator from a running sum of phi_k. Layout (B, N, H, ...)."""
    kernel = _fla_numerator()
    extra = {"head_first": False} if _takes_head_first(kernel) else {}
    groups, length = phq.shape[3], phq.shape[1]
    kv0 = _groups(state.kv, groups)
    nums, finals = [], []
    vg = _groups(v, groups)
    for g in range(groups):
        o, ht = kernel(rq[:, :, :, g].contiguous(), rk.contiguous(), vg[..., g, :].contiguous(), scale=1.0,
                       initial_state=kv0[..., g, :].contiguous(), output_final_state=True, normalize=False, **extra)
        nums.append(o)
        finals.append(ht)
    num = torch.stack(nums, 3)  # (B, N, H, G, E)
    k_run = state.k_sum[:, None] + phk.cumsum(1)  # (B, N, H, F)
    den = torch.einsum("bnhgf,bnhf->bnhg", phq, k_run)
    count = (state.count[:, None] + torch.arange(1, length + 1, device=v.device)).to(v.dtype)[:, :, None, None]
    o = (num / count[..., None]) / (den / count + eps)[..., None]
    final = NaLaState(torch.stack(finals, 3).flatten(-2), state.k_sum + phk.sum(1), state.count + length)
    return o.flatten(-2), final


def resolve_backend(backend: str, inputs: torch.Tensor, *, causal: bool, cu_seqlens=None) -> str:
    """``"fla"`` or ``"torch"`` for the layer inputs ``inputs`` (their dtype before the fp32 feature maps).

    A model-wide backend meant for NaLa (``"triton"``, ``"reference"``) runs the PyTorch path of a linear kind.

    ``"auto"`` takes fla-core's chunked kernel for causal bfloat16/float16 CUDA inputs without ``cu_seqlens``
    when fla-core is installed: its kernels round fp32 operands to TF32 (about 1e-3 relative error, short of the
    1e-5 fp32 standard), well inside the 1e-2 of half-precision inputs. Everything else runs the PyTorch path.
    """
    if backend == "auto":
        half = inputs.dtype in (torch.bfloat16, torch.float16)
        usable = causal and half and inputs.is_cuda and cu_seqlens is None
        return "fla" if usable and _fla_numerator() is not None else "torch"
    return "fla" if backend == "fla" else "torch"  # NaLa's "triton" / "reference" mean the PyTorch path here


def _use_fla(phq: torch.Tensor, backend: str, cu_seqlens) -> bool:
    """Whether this causal call runs on fla-core (``backend="fla"``, checked)."""
    if backend != "fla":
        return False
    if cu_seqlens is not None or not phq.is_cuda or phq.dtype == torch.float64:
        raise ValueError("backend: 'fla' takes causal CUDA inputs (float32 compute) without cu_seqlens")
    if _fla_numerator() is None:
        raise ValueError("backend: 'fla' needs fla-core (pip install 'nalaformer[fla]')")
    return True


def linear_attention(
    phq: torch.Tensor, phk: torch.Tensor, v: torch.Tensor, *, causal: bool = False, eps: float = 1e-6,
    initial_state: NaLaState | None = None, output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK, backend: str = "auto",
    rope=None, head_dim: int | None = None,
):
    """Normalised linear attention. phq (B, N, H, G, F), phk (B, N, H, F), v (B, N, H, Dv) with G | Dv.

    ``rope``: rotary (sin, cos) tables, each (N, P) for the N tokens (packed: all T tokens), applied to the
    numerator's features in ``head_dim``-wide chunks (default F); see the module docstring.

    All three in one compute dtype (float32 or float64). Returns o (B, N, H, Dv), or ``(o, NaLaState)``
    with ``output_final_state``. ``backend="fla"`` runs fla-core's chunked kernel for causal CUDA inputs (no
    packed sequences; TF32-accurate); ``"auto"`` and ``"torch"`` run the PyTorch path here (the cores choose
    "fla" for half-precision layer inputs through :func:`resolve_backend`).
    """
    batch, length, heads, groups, features = phq.shape
    rq = rotate_chunks(phq, rope, head_dim or features, token_dim=1)
    rk = rotate_chunks(phk, rope, head_dim or features, token_dim=1)
    if causal and initial_state is None:
        rows = batch if cu_seqlens is None else cu_seqlens.numel() - 1
        initial_state = empty_state(rows, heads, features, v.shape[-1], dtype=v.dtype, device=v.device)
    elif causal:
        initial_state = NaLaState(initial_state.kv.to(v.dtype), initial_state.k_sum.to(v.dtype), initial_state.count)
    if causal and _use_fla(phq, backend, cu_seqlens):
        o, final = _fla_causal(phq, phk, v, eps, initial_state, rq, rk)
        return (o, final) if output_final_state else o
    tq, tk, tv = phq.transpose(1, 2), phk.transpose(1, 2), _groups(v, groups).transpose(1, 2)
    trq, trk = (None, None) if rope is None else (rq.transpose(1, 2), rk.transpose(1, 2))

    def run(sl: slice, rows: slice, state):
        numerator = (None, None) if rope is None else (trq[rows, :, sl], trk[rows, :, sl])
        args = (tq[rows, :, sl], tk[rows, :, sl], tv[rows, :, sl], eps, *numerator)
        return _causal(*args, state, chunk_size) if causal else (_noncausal(*args), None)

    o, final = over_segments(run, batch, length, cu_seqlens, initial_state, causal)  # packed: each on its own
    o = o.transpose(1, 2).flatten(-2)
    return (o, final) if output_final_state else o


def linear_decode_step(phq: torch.Tensor, phk: torch.Tensor, v: torch.Tensor, state: NaLaState | None, *,
                       eps: float = 1e-6, rope=None, head_dim: int | None = None) -> tuple[torch.Tensor, NaLaState]:
    """One token per sequence: phq (B, H, G, F), phk (B, H, F), v (B, H, Dv) -> (o (B, H, Dv), new state).

    ``rope``: this token's (sin, cos), each (P,) or (B, P), as in :func:`linear_attention`."""
    batch, heads, groups, features = phq.shape
    if state is None:
        state = empty_state(batch, heads, features, v.shape[-1], dtype=v.dtype, device=v.device)
    if rope is not None:
        rope = tuple(t.expand(batch, t.shape[-1]) for t in rope)
    rq = rotate_chunks(phq, rope, head_dim or features, token_dim=0)
    rk = rotate_chunks(phk, rope, head_dim or features, token_dim=0)
    kv = state.kv.to(v.dtype) + rk[..., :, None] * v[..., None, :]  # (B, H, F, Dv)
    k_sum = state.k_sum.to(v.dtype) + phk
    count = state.count + 1
    c = count.to(v.dtype)[:, None, None]
    num = torch.einsum("bhgf,bhfge->bhge", rq, _groups(kv, groups)) / c[..., None]
    den = torch.einsum("bhgf,bhf->bhg", phq, k_sum) / c
    return (num / (den + eps)[..., None]).flatten(-2), NaLaState(kv, k_sum, count)


def linear_attention_weights(phq: torch.Tensor, phk: torch.Tensor, *, causal: bool = False,
                             eps: float = 1e-6) -> torch.Tensor:
    """Explicit rows of :func:`linear_attention`: phq (..., Nq, G, F), phk (..., Nk, F) -> (..., G, Nq, Nk).

    ``o = weights @ v`` (per value group) is the O(N) output exactly. Each row sums to
    ``den / (den + eps)`` (1 up to eps; 0 for a query with no feature mass). Causal rows need Nq == Nk.
    """
    scores = torch.einsum("...igf,...jf->...gij", phq, phk)
    nq, nk = scores.shape[-2:]
    if causal:
        if nq != nk:
            raise ValueError(f"causal: explicit causal rows need as many queries as keys, got {nq} and {nk}")
        mask = torch.ones(nq, nk, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~mask, 0)
        n = torch.arange(1, nq + 1, device=scores.device, dtype=scores.dtype)[:, None]
    else:
        n = torch.full((nq, 1), nk, device=scores.device, dtype=scores.dtype)
    scores = scores / n
    return scores / (scores.sum(-1, keepdim=True) + eps)
