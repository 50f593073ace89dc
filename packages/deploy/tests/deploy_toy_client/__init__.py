"""A dependent of a real deployment, as eval or agent will be: the runner starts the deploy
artifact's server for it and passes the URL; it makes one chat completion, records the server's
pid (from the pid file the runner's service start wrote) and fails if asked to."""
import json
from pathlib import Path

from deploy_toy_client.config import DeployClientConfig

__all__ = ["run", "DeployClientConfig"]


def run(cfg: DeployClientConfig, inputs, out: Path) -> dict:
    import openai

    endpoint = inputs["endpoint"]
    api = openai.OpenAI(base_url=endpoint.url, api_key="none", max_retries=0, timeout=120)
    model = api.models.list().data[0].id
    reply = api.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=4)
    (pid_file,) = (Path(endpoint.path) / ".fullchain").glob("service-*.json")
    record = {"url": endpoint.url, "pid": json.loads(pid_file.read_text())["pid"],
              "finish_reason": reply.choices[0].finish_reason}
    (out / "server.json").write_text(json.dumps(record))
    if cfg.fail:
        raise RuntimeError("deploy client failure requested by config")
    return record
