"""Whether spandrel's families run faster with channels-last tensors on the CPU (issue #29: "channels-last
for every model where it measures faster").

    python research/measure_channels_last.py                 # every spandrel family of measure_memory.py
    python research/measure_channels_last.py Compact SPAN    # the entries whose name starts so
    python research/measure_channels_last.py --large Compact # at the entry's second (larger) side

For each family (random weights, the published models' settings: measure_memory.ENTRIES), one float32
forward at its first measuring side, in torch.inference_mode at the process's thread count: the model
and input contiguous, then both channels-last, alternated, best of ROUNDS; the ratio (channels-last /
contiguous) and the largest difference between the two outputs in 8-bit steps. Prints the CPU flags
and `uptime` with the table. The spandrel table in models/spandrel_model.py (CHANNELS_LAST) takes the
families measured at most FASTER (0.9x).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_memory import ENTRIES  # noqa: E402  (research/ is not a package)

ROUNDS = 3
FASTER = 0.9


def _time(call, x) -> float:
    start = time.perf_counter()
    call(x)
    return time.perf_counter() - start


def measure(name: str, large: bool) -> str:
    entry = ENTRIES[name]
    built = entry.build()
    side = entry.sides[1 if large else 0]
    side -= side % built.multiple
    x = torch.rand(1, built.channels, side, side)
    model = built.call
    with torch.inference_mode():
        contiguous = model(x, None)
        net = built.call.__closure__  # the module the call closes over, for .to(memory_format)
        modules = [c.cell_contents for c in net or () if isinstance(c.cell_contents, torch.nn.Module)]
        times = {"contiguous": [], "channels_last": []}
        for _ in range(ROUNDS):
            for m in modules:
                m.to(memory_format=torch.contiguous_format)
            times["contiguous"].append(_time(lambda t: model(t, None), x))
            for m in modules:
                m.to(memory_format=torch.channels_last)
            xl = x.contiguous(memory_format=torch.channels_last)
            times["channels_last"].append(_time(lambda t: model(t, None), xl))
        last = model(xl, None)
    diff = float((last.float() - contiguous.float()).abs().max()) * 255
    a, b = min(times["contiguous"]), min(times["channels_last"])
    return f"| {name} | {side}x{side} | {a:.3f} | {b:.3f} | {b / a:.2f}x | {diff:.4f} |"


def main() -> None:
    large = "--large" in sys.argv
    wanted = [a for a in sys.argv[1:] if a != "--large"]
    names = [n for n, e in ENTRIES.items() if e.origin == "spandrel" and (not wanted or n.startswith(tuple(wanted)))]
    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0]
    print(f"cpu flags: {' '.join(f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile') if f' {f}' in flags)}; "
          f"threads {torch.get_num_threads()}; {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print("| family | input | contiguous s | channels-last s | ratio | max diff /255 |")
    print("|---|---|---|---|---|---|")
    for name in names:
        print(measure(name, large), flush=True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
