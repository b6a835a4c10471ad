#!/usr/bin/env python3
"""Writes tests/fixtures/ops_torch.bin: PyTorch as the independent oracle for
the ref backend's ops (read by tests/test_grad.c).

Each op is written here from the math of docs/gpt-oss.md §5 and
kernels/ops.h, eagerly, in float64, on float32
inputs; gradients come from torch.autograd (SwiGLU's clamps are written with
torch.where so that their boundary gradient is the one kernels/ops.h
specifies, whatever the installed torch.clamp does). AdamW is torch.optim.AdamW itself. The dropout
mask is an independent Python implementation of the hash documented in
kernels/ops.h.

File format: b"MXLOPFX1", u32 version (1), u32 record count, then per record
u32 name length, name (ASCII), u32 dtype (0 f32, 1 f64, 2 i32, 3 u16, 4 u8),
u64 element count, the elements, little-endian.

Usage: python3 tools/gen_op_fixtures.py [output path]
"""
import struct
import sys

import numpy as np
import torch

DTYPES = {np.float32: 0, np.float64: 1, np.int32: 2, np.uint16: 3, np.uint8: 4}
records = []


def add(name, array):
    array = np.ascontiguousarray(array)
    code = DTYPES[array.dtype.type]
    records.append((name, code, array))


def add_int(name, value):
    add(name, np.array([value], dtype=np.int32))


def add_f32(name, value):
    add(name, np.array([value], dtype=np.float32))


def bf16_bits(x):
    """Round float32 values to bf16 (nearest even) and return the bit patterns."""
    t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def bf16_values(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def f64(t):
    return t.detach().numpy().astype(np.float64)


rng = np.random.default_rng(20260)


def normal(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def uniform(lo, hi, *shape):
    return rng.uniform(lo, hi, shape).astype(np.float32)


# ---------------------------------------------------------------- attention
def attention():
    nq = nk = 14
    nh, nkv, d, window = 4, 2, 16, 4
    # two packed documents (9 and 5 tokens), positions restart; key slot 3 is
    # an empty cache slot (segment -1), invisible to every query
    q_seg = np.array([0] * 9 + [1] * 5, dtype=np.int32)
    q_pos = np.array(list(range(9)) + list(range(5)), dtype=np.int32)
    k_seg, k_pos = q_seg.copy(), q_pos.copy()
    k_seg[3] = -1
    q, k, v = normal(nq, nh, d, scale=1.5), normal(nk, nkv, d), normal(nk, nkv, d)
    sinks = bf16_bits(uniform(-1, 2, nh))
    scale = np.float32(1.0 / np.sqrt(d))
    dout = normal(nq, nh, d)

    qt = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    vt = torch.tensor(v, dtype=torch.float64, requires_grad=True)
    group = nh // nkv
    kh = kt.repeat_interleave(group, dim=1)  # query head h reads KV head h // group
    vh = vt.repeat_interleave(group, dim=1)
    s = torch.einsum("ihd,jhd->hij", qt, kh) * float(scale)
    qp, qs = torch.tensor(q_pos)[:, None], torch.tensor(q_seg)[:, None]
    kp, ks = torch.tensor(k_pos)[None, :], torch.tensor(k_seg)[None, :]
    allowed = (ks == qs) & (kp <= qp) & ((qp - kp) < window)
    s = s.masked_fill(~allowed[None], float("-inf"))
    sink = torch.tensor(bf16_values(sinks))[:, None, None].expand(nh, nq, 1)
    full = torch.cat([s, sink], dim=2)  # the sink: an extra logit with no value
    lse = torch.logsumexp(full, dim=2).T  # [nq, nh]
    p = torch.softmax(full, dim=2)[..., :nk]
    out = torch.einsum("hij,jhd->ihd", p, vh)
    (out * torch.tensor(dout, dtype=torch.float64)).sum().backward()

    for name, val in [("nq", nq), ("nk", nk), ("nh", nh), ("nkv", nkv), ("d", d),
                      ("window", window)]:
        add_int("attn." + name, val)
    add("attn.q", q), add("attn.k", k), add("attn.v", v), add("attn.sinks", sinks)
    add_f32("attn.scale", scale)
    add("attn.q_pos", q_pos), add("attn.q_seg", q_seg)
    add("attn.k_pos", k_pos), add("attn.k_seg", k_seg)
    add("attn.dout", dout)
    add("attn.out", f64(out)), add("attn.lse", f64(lse))
    add("attn.dq", f64(qt.grad)), add("attn.dk", f64(kt.grad)), add("attn.dv", f64(vt.grad))


# ---------------------------------------------------------------- swiglu
def swiglu():
    m, I = 5, 16
    alpha, limit = float(np.float32(1.702)), 7.0
    h = uniform(-10, 10, m, 2 * I)
    flat = h.reshape(-1)
    specials = [7.0, -7.0, 7.0, -7.0, 6.99, 7.01, -6.99, -7.01]
    for i, val in enumerate(specials):  # gate and up lanes at and around the clamps
        flat[3 * i] = val
        flat[3 * i + 1 + 32] = val
    dact = normal(m, I)
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    # The clamps as torch.where, whose gradient goes to the selected branch:
    # at exactly ±limit the input itself is selected, so the boundary passes
    # the gradient as kernels/ops.h specifies. (torch.clamp passed it too
    # until PyTorch switched scalar clamps to the minimum-norm subgradient,
    # 0 at the boundary, in 2026; the torch installed here may do either.)
    gate, up = ht[:, 0::2], ht[:, 1::2]
    g = torch.where(gate > limit, torch.full_like(gate, limit), gate)  # clamped above only
    u = torch.where(up > limit, torch.full_like(up, limit),
                    torch.where(up < -limit, torch.full_like(up, -limit), up))
    act = g * torch.sigmoid(alpha * g) * (u + 1)
    (act * torch.tensor(dact, dtype=torch.float64)).sum().backward()
    add_int("swiglu.m", m), add_int("swiglu.I", I)
    add("swiglu.h", h), add("swiglu.dact", dact)
    add("swiglu.act", f64(act)), add("swiglu.dh", f64(ht.grad))


# ---------------------------------------------------------------- router
def router():
    n, E, k = 6, 8, 4
    logits = normal(n, E, scale=2.0)
    dweights = normal(n, k)
    lt = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    vals, idx = torch.topk(lt, k, dim=1, sorted=True)  # no ties in these logits
    weights = torch.softmax(vals, dim=1)  # top-k first, softmax over the k only
    (weights * torch.tensor(dweights, dtype=torch.float64)).sum().backward()
    add_int("router.n", n), add_int("router.E", E), add_int("router.k", k)
    add("router.logits", logits), add("router.dweights", dweights)
    add("router.experts", idx.numpy().astype(np.int32))
    add("router.weights", f64(weights)), add("router.dlogits", f64(lt.grad))


# ---------------------------------------------------------------- rmsnorm
def rmsnorm():
    n, H = 3, 40
    eps = float(np.float32(1e-5))
    x = normal(n, H, scale=2.0)
    g = bf16_bits(uniform(0.5, 1.5, H))
    dy = normal(n, H)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = xt * torch.rsqrt((xt * xt).mean(dim=1, keepdim=True) + eps) * torch.tensor(bf16_values(g))
    (y * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    add_int("rmsnorm.n", n), add_int("rmsnorm.H", H)
    add("rmsnorm.x", x), add("rmsnorm.g", g), add("rmsnorm.dy", dy)
    add("rmsnorm.y", f64(y)), add("rmsnorm.dx", f64(xt.grad))


# ---------------------------------------------------------------- rope
def rope():
    n, heads, d = 4, 2, 16
    pos = np.array([0, 1, 77, 100000], dtype=np.int32)
    inv_freq = (150000.0 ** (-2.0 * np.arange(d // 2) / d)).astype(np.float32)
    conc = np.float32(0.1 * np.log(32.0) + 1.0)
    x = normal(n, heads, d)
    # the angle is an fp32 product, as in the gpt-oss references
    theta = (pos.astype(np.float32)[:, None] * inv_freq[None, :]).astype(np.float32)
    cos = torch.tensor(np.cos(theta.astype(np.float64)))[:, None, :]
    sin = torch.tensor(np.sin(theta.astype(np.float64)))[:, None, :]
    xt = torch.tensor(x, dtype=torch.float64)
    c = float(conc)
    x1, x2 = xt[..., : d // 2], xt[..., d // 2:]  # rotate-half pairs (j, j + d/2)
    half = torch.cat([c * (x1 * cos - x2 * sin), c * (x2 * cos + x1 * sin)], dim=-1)
    a, b = xt[..., 0::2], xt[..., 1::2]  # adjacent pairs (2j, 2j + 1)
    inter = torch.stack([c * (a * cos - b * sin), c * (b * cos + a * sin)], dim=-1)
    inter = inter.reshape(n, heads, d)
    add_int("rope.n", n), add_int("rope.heads", heads), add_int("rope.d", d)
    add("rope.pos", pos), add("rope.inv_freq", inv_freq), add_f32("rope.concentration", conc)
    add("rope.x", x)
    add("rope.y_halfsplit", f64(half)), add("rope.y_interleaved", f64(inter))


# ---------------------------------------------------------------- cross-entropy
def xent():
    n, H, V = 5, 24, 300
    h = normal(n, H)
    w = bf16_bits(uniform(-0.5, 0.5, V, H))
    targets = rng.integers(0, V, n).astype(np.int32)
    targets[0] = V - 1
    weight = np.array([1.0, 0.5, 0.0, 2.0, 1.25], dtype=np.float32)  # token 2 masked
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    logits = ht @ torch.tensor(bf16_values(w)).T
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets).long(),
                                             reduction="none")
    wt = torch.tensor(weight, dtype=torch.float64)
    (wt * loss).sum().backward()
    loss = torch.where(wt != 0, loss, torch.zeros_like(loss))
    add_int("xent.n", n), add_int("xent.H", H), add_int("xent.V", V)
    add("xent.h", h), add("xent.w", w), add("xent.targets", targets), add("xent.weight", weight)
    add("xent.loss", f64(loss)), add("xent.dh", f64(ht.grad))


# ---------------------------------------------------------------- MXFP4
FP4 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4_dequant(blocks, scales, bias):
    """blocks [E, rows, cols/32, 16], scales [E, rows, cols/32] -> [E, rows, cols]."""
    lo, hi = blocks & 0x0F, blocks >> 4
    vals = np.stack([FP4[lo], FP4[hi]], axis=-1)  # element 2j: low nibble, 2j+1: high
    vals = vals.reshape(*blocks.shape[:3], 32)
    vals = vals * np.ldexp(1.0, scales.astype(np.int64) - bias)[..., None]
    return vals.reshape(blocks.shape[0], blocks.shape[1], -1)


def mxfp4():
    n, k, E, rows, cols, bias = 4, 2, 3, 8, 64, 141  # the metal scale bias
    blocks = rng.integers(0, 256, (E, rows, cols // 32, 16)).astype(np.uint8)
    scales = (bias - rng.integers(0, 4, (E, rows, cols // 32))).astype(np.uint8)
    b = bf16_bits(uniform(-1, 1, E, rows))
    experts = np.stack([rng.permutation(E)[:k] for _ in range(n)]).astype(np.int32)
    x = normal(n * k, cols)
    dy = normal(n * k, rows)
    W = torch.tensor(mxfp4_dequant(blocks, scales, bias))
    bt = torch.tensor(bf16_values(b))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    e = torch.tensor(experts.reshape(-1)).long()
    y = torch.einsum("ac,aoc->ao", xt, W[e]) + bt[e]
    (y * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    for name, val in [("n", n), ("k", k), ("E", E), ("rows", rows), ("cols", cols),
                      ("scale_bias", bias)]:
        add_int("mx." + name, val)
    add("mx.blocks", blocks.reshape(-1)), add("mx.scales", scales.reshape(-1))
    add("mx.bias", b.reshape(-1)), add("mx.experts", experts)
    add("mx.x", x), add("mx.dy", dy)
    add("mx.y", f64(y)), add("mx.dx", f64(xt.grad))


# ---------------------------------------------------------------- AdamW
def adamw():
    n, steps = 50, 3
    lr, b1, b2, eps, wd, grad_scale = (np.float32(v) for v in (1e-2, 0.9, 0.999, 1e-8, 0.1, 0.5))
    param0 = normal(n)
    grads = normal(steps, n)
    p = torch.tensor(param0, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=float(lr), betas=(float(b1), float(b2)), eps=float(eps),
                            weight_decay=float(wd), foreach=False)
    for s in range(steps):
        p.grad = torch.tensor(grads[s]) * float(grad_scale)  # exact: a power of two
        opt.step()
    state = opt.state[p]
    add_int("adamw.n", n), add_int("adamw.steps", steps)
    add("adamw.param0", param0), add("adamw.grads", grads)
    add("adamw.hparams", np.array([lr, b1, b2, eps, wd, grad_scale], dtype=np.float32))
    add("adamw.param", f64(p)), add("adamw.m", f64(state["exp_avg"]))
    add("adamw.v", f64(state["exp_avg_sq"]))


# ---------------------------------------------------------------- dropout
def dropout():
    n, p, seed = 300, np.float32(0.3), 0x0123456789ABCDEF
    mask64 = (1 << 64) - 1
    x = normal(n)
    scale = np.float32(1.0) / (np.float32(1.0) - p)
    y = np.zeros(n, dtype=np.float32)
    for i in range(n):
        z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
        z ^= z >> 31
        u = np.float32(z >> 40) * np.float32(2.0 ** -24)
        y[i] = x[i] * scale if u >= p else np.float32(0.0)
    add_int("dropout.n", n), add_f32("dropout.p", p)
    add("dropout.seed", np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32).view(np.int32))
    add("dropout.x", x), add("dropout.y", y)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/ops_torch.bin"
    torch.manual_seed(0)
    for make in (attention, swiglu, router, rmsnorm, rope, xent, mxfp4, adamw, dropout):
        make()
    with open(out, "wb") as f:
        f.write(b"MXLOPFX1" + struct.pack("<II", 1, len(records)))
        for name, code, array in records:
            raw = name.encode("ascii")
            f.write(struct.pack("<I", len(raw)) + raw + struct.pack("<IQ", code, array.size))
            f.write(array.astype(array.dtype.newbyteorder("<")).tobytes())
    print(f"{out}: {len(records)} records")


if __name__ == "__main__":
    main()
