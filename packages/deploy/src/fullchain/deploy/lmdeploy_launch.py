"""`python -m fullchain.deploy.lmdeploy_launch --api-key-env VAR -- <lmdeploy api_server args>`:
exec `lmdeploy serve api_server`, adding `--api-keys` from the environment variable when it is
set (LMDeploy reads keys only from its command line, and the artifact must not hold them)."""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    key_env = None
    if argv[:1] == ["--api-key-env"]:
        key_env, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    command = [sys.executable, "-m", "lmdeploy", "serve", "api_server", *argv]
    if key_env and os.environ.get(key_env):
        command += ["--api-keys", os.environ[key_env]]
    os.execv(sys.executable, command)  # the server replaces us: same pid, signals reach it


if __name__ == "__main__":
    main()
