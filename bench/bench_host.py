"""The host's CPU, named as every benchmark figure must name it: model name,
cpu family and model, and the instruction sets the kernels choose between
(bench/busy_machine.py, vs_llamacpp.py, train_vs_peft.py)."""
import os


def cpu_name():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        return "unknown CPU"
    flags = info.get("flags", "").split()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return "%s (cpu family %s, model %s; %s), %d logical CPUs" % (
        info.get("model name", "?"), info.get("cpu family", "?"), info.get("model", "?"),
        " ".join(isa) or "no AVX2", os.cpu_count() or 0)
