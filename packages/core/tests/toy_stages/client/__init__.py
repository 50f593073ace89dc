"""Toy dependent of a service: talks to the server the runner started for it."""
import json
import time
import urllib.request
from pathlib import Path

from toy_stages.client.config import ClientConfig

__all__ = ["run", "ClientConfig"]


def run(cfg: ClientConfig, inputs, out: Path) -> dict:
    url = inputs["endpoint"].url
    with urllib.request.urlopen(url + "/models", timeout=10) as response:
        models = json.loads(response.read())
    with urllib.request.urlopen(url + "/pid", timeout=10) as response:
        server_pid = json.loads(response.read())["pid"]
    (out / "server.json").write_text(json.dumps({"url": url, "models": models, "pid": server_pid}))
    if cfg.sleep_s:
        time.sleep(cfg.sleep_s)
    if cfg.fail:
        raise RuntimeError("toy client failure requested by config")
    return {"model": models["data"][0]["id"], "server_pid": server_pid, "url": url}
