"""The host's CPU, named as every benchmark figure must name it: model name,
cpu family and model, and the instruction sets the kernels choose between
(bench/busy_machine.py, vs_llamacpp.py, train_vs_peft.py), and a child
process run with its own CPU time and peak RSS."""
import os
import subprocess
import tempfile
import time


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


def run_child(cmd):
    """Runs cmd to its end; returns (stdout, stderr, wall s, CPU s, peak RSS bytes)
    of that one child (wait4), or raises SystemExit naming the command and its
    stderr's tail when it fails."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        out = p.stdout.read().decode(errors="replace")
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        err.seek(0)
        errtext = err.read().decode(errors="replace")
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit("%s failed (status %d):\n%s" % (" ".join(cmd), rc, errtext[-4000:]))
    return out, errtext, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024
