"""Runs mini-swe-agent against a loopback server and prints its run's wall and CPU seconds as JSON.

Started by bench/overhead.py with the Python of the separate venv mini-swe-agent is installed in, so this file
imports nothing from loopwright. The agent is built as mini-swe-agent's own `mini` builds it from its packaged
default config (LitellmModel with its bash tool, LocalEnvironment, DefaultAgent saving its trajectory after every
step); only the model's endpoint, its price (registered with litellm, as mini-swe-agent's docs say for a local
model) and the trajectory's path are set here. A warm-up run on its own server goes first, so imports count in no step.

    python -c "$(cat mswea_driver.py)" WARMUP_BASE_URL BASE_URL FOLDER   (run as a file, bench/http.py would
                                                                            shadow the standard library's http)
"""

import json
import os
import resource
import sys
import time
from pathlib import Path

MODEL = "openai/bench-loopback"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(base_url: str, folder: Path, name: str) -> None:
    import yaml
    from minisweagent.agents.default import DefaultAgent
    from minisweagent.config import builtin_config_dir
    from minisweagent.environments.local import LocalEnvironment
    from minisweagent.models.litellm_model import LitellmModel

    config = yaml.safe_load((builtin_config_dir / "default.yaml").read_text())
    registry = folder / "registry.json"
    registry.write_text(json.dumps({MODEL: {"litellm_provider": "openai", "mode": "chat", "max_tokens": 4096,
                                            "input_cost_per_token": 1e-9, "output_cost_per_token": 1e-9}}))
    model = LitellmModel(**{**config.get("model", {}), "model_name": MODEL, "litellm_model_registry": registry,
                            "model_kwargs": {"api_base": base_url, "api_key": "none"}})
    env = LocalEnvironment(**{**config.get("environment", {}), "cwd": str(folder)})
    agent = DefaultAgent(model, env, **{**config["agent"], "output_path": folder / f"{name}.traj.json",
                                        "step_limit": 0, "cost_limit": 0})
    result = agent.run("bench task")
    assert result.get("exit_status") == "Submitted", result


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price map over the network
    warmup_url, base_url, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    run(warmup_url, folder, "warmup")
    w0, c0 = time.perf_counter(), cpu()
    run(base_url, folder, "run")
    print(json.dumps({"wall": time.perf_counter() - w0, "cpu": cpu() - c0}))


if __name__ == "__main__":
    main()
