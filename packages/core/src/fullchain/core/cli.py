"""`fullchain` command line: run, plan, show, env.

    fullchain run experiment=tiny                       # run the graph (reuses complete steps)
    fullchain run experiment=tiny pretrain.optimizer.lr=1e-3,3e-3 -m   # Hydra multirun sweep
    fullchain run --spec runs/<run>/spec.yaml           # re-run a resolved spec exactly
    fullchain plan experiment=tiny                      # graph, ids, cached / to-run and why
    fullchain show <artifact-dir | step-id>             # manifest and lineage back to the corpus
    fullchain env sync [NAME ...] | fullchain env list  # per-stage environments
    fullchain serve <deploy artifact | step id> [deploy.api_key=KEY deploy.port=0]  # foreground
    fullchain deploy bench <artifact | URL> --concurrency 1,8,32 --duration 30   # load test
    fullchain eval compare <artifact> <artifact> ...    # one table across eval artifacts
    fullchain chat <deploy artifact | URL>              # talk to the agent, tool calls shown
    fullchain report <run dir | artifact | step id>     # one self-contained HTML page
    fullchain verify <artifact | step id>               # re-execute a step, compare checksums
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from fullchain.core.artifact import ArtifactError
from fullchain.core.config import ConfigError

log = logging.getLogger("fullchain")


def _setup_logging(verbose: bool = False) -> None:
    if getattr(log, "_fullchain_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[fullchain] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    log._fullchain_configured = True


def _spec_from_args(args) -> dict:
    from fullchain.core import spec as spec_mod

    if args.spec:
        if args.overrides:
            raise ConfigError(f"--spec {args.spec}: a resolved spec takes no overrides "
                              f"(got {args.overrides}); edit a copy of the file instead.")
        return spec_mod.load_spec(Path(args.spec))
    conf_dir = spec_mod.find_conf_dir(args.conf)
    return spec_mod.to_spec(spec_mod.compose(conf_dir, args.overrides))


def cmd_run(args) -> int:
    from fullchain.core import runner

    if args.multirun:
        return _multirun(args)
    runner.execute(_spec_from_args(args))
    return 0


def _multirun(args) -> int:
    """Hand the sweep to Hydra's own multirun machinery (so hydra/launcher=submitit_slurm etc.
    work); each job composes its spec and runs the graph, reusing whatever earlier jobs made."""
    import hydra
    from fullchain.core import runner
    from fullchain.core import spec as spec_mod
    from omegaconf import DictConfig

    if args.spec:
        raise ConfigError("--spec and -m: a resolved spec is one run; sweep over the config tree")
    conf_dir = spec_mod.find_conf_dir(args.conf)
    spec_mod.register_resolvers()

    # Every job's spec is checked before the first job starts, as a plain run checks its one:
    # a config error exits 2 with our message (in Hydra's own loop it would exit 1, in Hydra's
    # format, or surface only when that job's turn comes).
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    # keys a group's YAML leaves at their dataclass default are set with `++` (see spec.py)
    args.overrides = spec_mod.fields_at_default(conf_dir, list(args.overrides)) or list(args.overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(list(args.overrides))
    except HydraException as exc:
        raise ConfigError(f"overrides {args.overrides}: {exc}") from exc
    try:
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except HydraException:
        jobs = []  # a sweep only Hydra's config loader can expand (glob over a group): Hydra checks
    planned = None
    for overrides in jobs:
        try:
            planned, _ = runner.plan(spec_mod.to_spec(spec_mod.compose(conf_dir, overrides)))
        except (ConfigError, ArtifactError) as exc:
            raise type(exc)(f"{exc}\n  (sweep job [{' '.join(overrides)}]; no job of the sweep was "
                            "started)") from exc
    # Jobs may run elsewhere (hydra/launcher=submitit_slurm): each failed job leaves a file in a
    # directory on the shared store, which the driver reads when Hydra returns.
    import tempfile

    runs = Path((planned or spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(
        conf_dir, [])))).get("paths", {}).get("runs", "."))
    runs.mkdir(parents=True, exist_ok=True)
    failed_dir = Path(tempfile.mkdtemp(prefix=".sweep-failures-", dir=runs))

    @hydra.main(config_path=str(conf_dir), config_name=spec_mod.CONFIG_NAME, version_base="1.3")
    def job(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        overrides = " ".join(HydraConfig.get().overrides.task)
        log.info("job %s: %s", HydraConfig.get().job.num, overrides)
        try:
            runner.execute(spec_mod.to_spec(cfg))
        except (ConfigError, ArtifactError, runner.StepFailed) as exc:
            # one clean paragraph per failed job; the sweep goes on, the exit code tells
            code = 1 if isinstance(exc, runner.StepFailed) else 2
            number = HydraConfig.get().job.num
            (failed_dir / f"{number}.json").write_text(json.dumps({"overrides": overrides, "code": code}))
            print(f"fullchain: job [{overrides}] failed: {exc}", file=sys.stderr)

    saved = sys.argv
    sys.argv = ["fullchain", *args.overrides, "--multirun"]
    try:
        job()
    finally:
        sys.argv = saved
        failures = [(record["overrides"], record["code"]) for record in
                    (json.loads(f.read_text()) for f in sorted(failed_dir.glob("*.json")))]
        shutil.rmtree(failed_dir, ignore_errors=True)
    if failures:
        log.error("%d job(s) of the sweep failed: %s", len(failures), "; ".join(o for o, _ in failures))
        return max(code for _, code in failures)
    return 0


def cmd_plan(args) -> int:
    from fullchain.core import runner

    started = time.time()
    spec, steps = runner.plan(_spec_from_args(args))
    rows = []
    for step in steps:
        inputs = ",".join(f"{role}:{up.name}@{up.step_id[:8]}" for role, up in step.input_steps()) or "-"
        node = step.name if step.name == step.kind else f"{step.name} ({step.kind})"
        rows.append((node + ("" if step.selected else " [input]"), step.step_id, step.status,
                     inputs, step.reason))
    head = ("node (stage)", "step id", "status", "inputs (role:node@id)")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  why")
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    to_run = sum(1 for s in steps if s.status == "to-run")
    print(f"\n{len(steps)} step(s): {to_run} to run, {len(steps) - to_run} cached  "
          f"(store: {spec['paths']['store']}; planned in {time.time() - started:.2f}s)")
    return 0


def cmd_show(args) -> int:
    from fullchain.core import show

    store = Path(args.store) if args.store else None
    if store is None and not Path(args.target).is_dir():
        from fullchain.core import spec as spec_mod

        spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(
            spec_mod.find_conf_dir(args.conf), args.overrides)))
        store = Path(spec["paths"]["store"])
    print(show.render(show.locate(args.target, store), full=args.full))
    return 0


def cmd_env(args) -> int:
    from fullchain.core import envs
    from fullchain.core import spec as spec_mod

    conf_dir = spec_mod.find_conf_dir(args.conf)
    spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(conf_dir, args.overrides)))
    env_node = spec["env"]
    specs = envs.env_specs(env_node)
    root = Path(spec["paths"]["root"])
    if args.action == "sync":
        names = args.names or sorted(specs)
        for name in names:
            if name not in specs:
                raise ConfigError(f"env sync {name}: no such environment; defined: {sorted(specs)}")
            log.info("%s", envs.sync(specs[name], root, tool=args.installer,
                                     echo=lambda m: log.info("%s", m), verbose=args.verbose))
        return 0
    stage_env = {}
    for stage in spec.get("graph", {}):
        stage_env.setdefault(envs.env_for_stage(env_node, stage).name, []).append(stage)
    for name, env in sorted(specs.items()):
        python = env.interpreter
        print(f"{name}: {python}")
        print(f"  stages: {', '.join(stage_env.get(name, [])) or '-'}")
        if not python.exists():
            print("  status: NOT BUILT (fullchain env sync " + name + ")")
            continue
        info = envs.describe(python)
        installed = info["packages"]
        # this project's own distributions (the stage packages) first, then the key libraries
        shown = sorted(p for p in installed if p.startswith("fullchain-"))
        shown += [p for p in envs.KEY_PACKAGES if p in installed and p not in shown]
        print(f"  python: {info['python_version']}")
        for package in shown:
            print(f"  {package}: {installed[package]}")
    return 0


# --- serve / deploy bench ----------------------------------------------------------------------

SERVE_OPTIONS = ("api_key", "port", "host")
"""`deploy.<option>=value` overrides `fullchain serve` applies when starting, not to the spec."""


def _serve_target(args) -> tuple[Path, dict, dict]:
    """(deploy artifact, serve-time options, its config) from an artifact dir, a step id, or
    the spec (overrides): the deploy node's complete artifact in the store."""
    from fullchain.core import show
    from fullchain.core import spec as spec_mod
    from fullchain.core.artifact import read_manifest

    target, overrides = args.target, list(args.overrides)
    if target is not None and ("=" in target or target.startswith(("~", "+"))):  # an override
        target, overrides = None, [target, *overrides]
    options, rest = {}, []
    for override in overrides:
        key, _, value = override.partition("=")
        node, _, option = key.partition(".")
        if node == args.node and option in SERVE_OPTIONS:
            options[option] = value
        else:
            rest.append(override)
    conf_dir = spec_mod.find_conf_dir(args.conf)
    if target is not None:
        if rest:
            raise ConfigError(f"serve {target}: the artifact is built; only "
                              f"{', '.join(f'{args.node}.{o}' for o in SERVE_OPTIONS)} apply when "
                              f"serving it (got {rest}). To change the deployment, rebuild it: "
                              f"fullchain run stages=[{args.node}] ...")
        store = None
        if not Path(target).is_dir():
            spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(conf_dir, [])))
            store = Path(spec["paths"]["store"])
        path = show.locate(target, store)
    else:
        from fullchain.core import runner

        spec_doc = spec_mod.to_spec(spec_mod.compose(conf_dir, [*rest, f"stages=[{args.node}]"]))
        _, steps = runner.plan(spec_doc)
        (step,) = [s for s in steps if s.name == args.node]
        if step.status != "cached":
            raise ConfigError(f"serve: the {args.node} step {step.step_id} of this spec is not built "
                              f"({step.reason}); build it first: fullchain run stages=[{args.node}] "
                              + " ".join(rest))
        path = step.path
    manifest = read_manifest(path) or {}
    if manifest and "deployment" not in (manifest.get("contracts") or {}):
        raise ArtifactError(f"{path}: a {manifest.get('stage')} artifact, not a deployment "
                            f"(it provides {sorted(manifest.get('contracts') or {})})")
    return path, options, manifest.get("config") or {}


def cmd_serve(args) -> int:
    """The deployment's server in the foreground until Ctrl-C or SIGTERM; no process is left."""
    import os
    import signal

    from fullchain.core import procs, services
    from fullchain.core.contracts import read_deployment

    path, options, config = _serve_target(args)
    deployment = read_deployment(path)
    env = dict(os.environ)
    if "api_key" in options:
        if not deployment.api_key_env:
            raise ConfigError(f"{args.node}.api_key: the {deployment.engine} deployment at {path} "
                              "names no api_key_env to pass a key through")
        env[deployment.api_key_env] = options["api_key"]
    host = options.get("host") or config.get("host") or deployment.host
    port = int(options.get("port", config.get("port", 8000)))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = Path(path) / "logs" / f"serve-{stamp}-{os.getpid()}"
    started = time.time()
    running = services.start(args.node, Path(path), log_dir, env, host=host, port=port)
    try:
        keyed = bool(deployment.api_key_env and env.get(deployment.api_key_env))
        print(f"fullchain serve: ready {running.url} model {deployment.model_name} "
              f"(engine {deployment.engine}, pid {running.service.pid}, started in "
              f"{time.time() - started:.1f}s, API key {'required' if keyed else 'off'}); logs: "
              f"{log_dir}; Ctrl-C or SIGTERM stops it", flush=True)
        while running.service.process.poll() is None:
            time.sleep(0.5)
        print(f"fullchain serve: the server exited {running.service.process.returncode} on its "
              f"own; see {log_dir / 'service.stderr.log'}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, procs.Terminated) as exc:
        name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
        print(f"fullchain serve: {name}: stopping the server", file=sys.stderr, flush=True)
        return 0
    finally:
        services.stop(running)


def cmd_deploy_bench(args) -> int:
    """Load-test a deployment (started here on a free port, stopped after) or a running URL."""
    import json
    import os

    from fullchain.core import services
    from fullchain.core.contracts import read_deployment
    from fullchain.deploy.bench import format_table, load_test, write_report
    from fullchain.deploy.config import BenchConfig

    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    bench = BenchConfig(concurrency=levels, duration_s=args.duration, max_requests=args.max_requests,
                        max_tokens=args.max_tokens)
    running = None
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.target.startswith(("http://", "https://")):
        url, model = args.target.rstrip("/"), args.model
        if model is None:
            raise ConfigError("deploy bench URL: give --model (the served model name)")
    else:
        args.node, args.overrides = "deploy", []
        path, _, _ = _serve_target(args)
        deployment = read_deployment(path)
        model = args.model or deployment.model_name
        api_key = api_key or (os.environ.get(deployment.api_key_env) if deployment.api_key_env else None)
        running = services.start("deploy", Path(path), Path(path) / "logs" / "bench-service",
                                 dict(os.environ), port=0)
        url = running.url
    try:
        rows = load_test(url, model, bench, api_key, echo=print)
    finally:
        if running is not None:
            services.stop(running)
    out = Path(args.out or Path("runs") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    files = write_report(rows, out, title=f"{model} @ {url}")
    print(f"\n{format_table(rows)}\n\n{json.dumps({k: str(v) for k, v in files.items()})}")
    return 0


# Commands whose code lives with what they serve: `fullchain <name> ARGS` calls
# `<module>.main(ARGS) -> exit code` (each parses its own arguments, `fullchain <name> -h`).
DELEGATED = {
    "eval": ("fullchain.eval.cli", "evaluation tools: compare"),
    "chat": ("fullchain.agent.chat", "an interactive agent session on a deployment or URL"),
    "report": ("fullchain.core.report", "a run's self-contained HTML report"),
    "verify": ("fullchain.core.verify", "re-execute a step and compare payload checksums"),
}


def _delegate(args) -> int:
    import importlib

    module_name = DELEGATED[args.command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not module_name.startswith(exc.name or "\0"):
            raise
        raise ConfigError(f"fullchain {args.command}: {module_name} is not installed in "
                          f"{sys.executable} (bash tools/bootstrap.sh installs every stage)") from exc
    return int(module.main(list(args.rest)) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fullchain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, spec=True):
        p.add_argument("--conf", help="config dir (default: conf/ of the project around the cwd)")
        if spec:
            p.add_argument("--spec", help="a resolved spec file written by an earlier run")
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=tiny")

    p = sub.add_parser("run", help="run the graph")
    common(p)
    p.add_argument("-m", "--multirun", action="store_true", help="Hydra multirun sweep")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("plan", help="print the graph without running it")
    common(p)
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("show", help="an artifact's manifest and lineage")
    p.add_argument("target", help="artifact directory or step id (prefix)")
    p.add_argument("--store", help="artifact store (default: paths.store of the composed spec)")
    p.add_argument("--full", action="store_true", help="print the whole manifest as JSON too")
    common(p, spec=False)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("env", help="per-stage environments")
    p.add_argument("action", choices=["sync", "list"])
    p.add_argument("names", nargs="*", default=[], help="environments to sync (default: all)")
    p.add_argument("--installer", choices=["uv", "pip"], default=None)
    p.add_argument("--conf")
    p.add_argument("--override", dest="overrides", action="append", default=[],
                   help="Hydra override for the env config, e.g. --override env=current")
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("serve", help="serve a deployment in the foreground (Ctrl-C stops it)")
    p.add_argument("target", nargs="?", help="deploy artifact dir or step id (default: the spec's "
                   "deploy step, built)")
    p.add_argument("--node", default="deploy", help="graph node of the deployment (default: deploy)")
    common(p, spec=False)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("deploy", help="deployment tools: bench")
    p.add_argument("action", choices=["bench"])
    p.add_argument("target", help="deploy artifact dir, step id, or a running server's base URL")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per level")
    p.add_argument("--max-requests", type=int, default=2000, help="at most this many per level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model", help="served model name (default: the deployment's)")
    p.add_argument("--api-key-env", default="FULLCHAIN_API_KEY")
    p.add_argument("--out", help="where bench.json and the PNG go (default: runs/bench-<time>)")
    p.add_argument("--conf")
    p.set_defaults(func=cmd_deploy_bench)
    for name, (_, help_text) in DELEGATED.items():
        p = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate)
    return parser


def main(argv: list[str] | None = None) -> None:
    import signal

    from fullchain.core.procs import Terminated, raise_on_sigterm
    from fullchain.core.runner import StepFailed

    # SIGTERM (kill, a scheduler's preemption) unwinds like Ctrl-C: the runner stops the step's
    # processes (or cancels its SLURM job) on the way out instead of orphaning them.
    raise_on_sigterm()

    # argparse's nargs='*' would take `-m` as an override: pull the flag out first
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        if args.command in ("run", "plan", "show", "serve") and all("=" in u for u in unknown):
            args.overrides = list(args.overrides) + unknown
        else:
            build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args.verbose)
    try:
        code = args.func(args)
    except (ConfigError, ArtifactError) as exc:
        print(f"fullchain: error: {exc}", file=sys.stderr)
        code = 2
    except StepFailed as exc:
        print(f"fullchain: step failed: {exc}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, Terminated) as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"fullchain: interrupted by {signal.Signals(signum).name}; the step that was "
              "running (if any) was stopped with all its processes and left incomplete (no "
              "manifest): the next run redoes it", file=sys.stderr)
        code = 128 + signum
    sys.exit(code)


if __name__ == "__main__":
    main()
