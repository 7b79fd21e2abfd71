"""Start `greenllm serve` on the simulated GPUs, query it with the `openai` client, print the
carbon receipt of each response, and stop the server (needs `pip install 'greenllm[serve]'`)."""

import re
import signal
import subprocess
import sys
import tempfile
import time

from openai import OpenAI

# Disg-Spec-Decode: Llama-2-7B on a virtual A100, its Llama-1B draft on a virtual T4, 20x time.
cmd = [sys.executable, "-m", "greenllm", "serve", "--backend", "sim", "--port", "0",
       "--config", "dsd:T4:llama-1b", "--time-scale", "20", "--region", "CISO"]  # fmt: skip
with tempfile.TemporaryFile("w+") as log:
    server = subprocess.Popen(cmd, stderr=log)
    url = None
    for _ in range(600):  # up to 60 s
        log.seek(0)
        if m := re.search(r"listening on (\S+)", log.read()):
            url = m.group(1)
            break
        if server.poll() is not None:
            break
        time.sleep(0.1)
    if url is None:
        server.kill()
        log.seek(0)
        sys.exit(f"the server did not start:\n{log.read()}")
    try:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        for prompt in ("Why reuse old GPUs?", "What is speculative decoding?"):
            out = client.completions.create(model="llama-2-7b", prompt=prompt, max_tokens=32)
            r = out.usage.model_extra["greenllm"]
            print(f"{prompt!r}: {out.usage.completion_tokens} tokens on {r['configuration']}")
            print(f"  energy {r['energy_j_total']:.0f} J ({r['energy']}), "
                  f"{r['embodied_g']:.4f} g embodied + {r['operational_g']:.4f} g operational "
                  f"at {r['intensity_g_per_kwh']:g} g/kWh = {r['total_g']:.4f} g "
                  f"({r['total_g_per_token'] * 1e3:.2f} mg/token; "
                  f"idle share {r['idle_g']:.4f} g)")  # fmt: skip
        stream = client.chat.completions.create(
            model="llama-2-7b", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        print(f"streamed {len(chunks)} chunks; the last one's receipt: "
              f"{chunks[-1].usage.model_extra['greenllm']['total_g']:.4f} g")  # fmt: skip
    finally:
        server.send_signal(signal.SIGINT)  # drains, stops, exits 130
        server.wait(timeout=60)
