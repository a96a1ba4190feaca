"""``python -m bench.run``: this service vs the HTTP floor, a naive endpoint, peer servers
and the in-process limit, on one machine, in one run.

Starts each server in turn on 127.0.0.1 (never two at once) and drives it with wrk
(:mod:`bench.wrk`; the Python generator when wrk is absent, said loudly) at each
concurrency level, then with a fixed arrival rate at shares of its peak
(:mod:`bench.openloop`); samples the service with py-spy at load; measures the
in-process limit with no server running. Prints one table and the ratios, writes every
figure to ``bench/results/<UTC timestamp>.json`` and rewrites ``BENCHMARKS.md``.
MMSERVE_* variables set by the caller reach the service.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import closedloop, inprocess, inputs, peer_envs, report, targets
from bench.bodies import encode_msgpack, encode_multipart, encode_v2_json
from bench.config import Config, parse_config
from bench.drive import TargetRun, measure_target, progress
from bench.machine import machine_info
from bench.results import SERVICE, BenchReport, compute_ratios
from bench.servers import ROOT, ServerFailed
from bench.wrk import WrkFailed
from service import model_store
from service.errors import ServiceError

ENCODERS = {
    targets.MULTIPART: encode_multipart,
    targets.MSGPACK: encode_msgpack,
    targets.V2_JSON: encode_v2_json,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_config(raw_argv)
    try:
        version = _model(config)
        metadata = model_store.load_metadata(version.path)
    except (ServiceError, subprocess.SubprocessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    generator, notes = choose_generator(config)
    samples = inputs.generate(config.images, config.image_side)
    plan, peers = plan_targets(config, version.path, notes)
    runs: dict[str, TargetRun] = {}
    with tempfile.TemporaryDirectory(prefix="mmserve-bench-") as tmp:
        work = Path(tmp)
        inputs.save(samples, work / "images")
        bodies = body_sets(plan, samples, work)
        try:
            for target in plan:
                try:
                    runs[target.name] = measure_target(
                        target,
                        bodies[target.body_format],
                        generator,
                        config,
                        work,
                        open_loop="open-loop" not in config.skip
                        and target.kind in (SERVICE, "peer"),
                        profile="profile" not in config.skip and target.kind == SERVICE,
                    )
                except ServerFailed as exc:
                    if target.kind != "peer":
                        raise
                    # A peer that fails says nothing about the service: report without it.
                    notes.append(f"{target.name}: left out, it failed: {str(exc)[:300]}")
                    progress(f"{target.name}: left out, it failed:\n{exc}")
                    continue
                notes.extend(runs[target.name].notes)
            limit = _inprocess(config, work)
        except (ServerFailed, WrkFailed, RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1

    kinds = {t.name: t.kind for t in plan if t.name in runs}
    rows = [row for run in runs.values() for row in run.rows]
    result = BenchReport(
        timestamp=started.isoformat(timespec="seconds"),
        command=_command_line(raw_argv),
        generator=generator.name,
        model={
            "name": version.name,
            "version": version.version,
            "path": str(version.path.resolve()),
            "image_size": list(metadata.image_size),
            "labels": len(metadata.labels),
            "profile": config.model_profile.name,
            "about": config.model_profile.about,
            "backbone": _architecture(metadata.training, "backbone"),
            "text_encoder": _architecture(metadata.training, "text_encoder"),
        },
        inputs={
            "count": len(samples),
            "side": config.image_side,
            "quality": inputs.JPEG_QUALITY,
            "mean_bytes": inputs.mean_bytes(samples),
            "body_mean_bytes": {
                fmt: sum(len(p.body) for p in b.payloads) / len(b.payloads)
                for fmt, b in bodies.items()
            },
        },
        config={
            "concurrency": config.concurrency,
            "duration_s": config.duration_s,
            "warmup_s": config.warmup_s,
            "inprocess_repetitions": config.repetitions,
            "inprocess_duration_s": config.inprocess_duration_s,
            "open_loop_shares": config.open_loop_shares,
            "open_loop_duration_s": config.open_loop_duration_s,
            "profile_concurrency": config.profile_concurrency,
            "profile_duration_s": config.profile_duration_s,
            "server_args": config.server_args,
            "workers": config.workers,
            "wrk_threads": config.wrk_threads,
            "mmserve_env": _mmserve_env(),
        },
        machine=machine_info(),
        targets=kinds,
        rows=rows,
        memory={name: run.memory for name, run in runs.items() if run.memory is not None},
        inprocess=limit,
        ratios=compute_ratios(rows, kinds, limit),
        open_loop=[o for run in runs.values() for o in run.open_loop],
        profiles=[run.profile for run in runs.values() if run.profile is not None],
        peers={
            p.name: {"label": targets.PEER_LABELS[p.name], **p.versions}
            for p in peers
            if p.name in runs
        },
        notes=notes,
        metrics_endpoint=any(
            r.mean_batch_size is not None for r in rows if kinds[r.target] == SERVICE
        ),
    )
    results_file = _write_json(result, config.results_dir, started)
    print()
    print(report.format_text(result))
    print(f"\nresults: {results_file}")
    if config.markdown is not None:
        report.write_markdown(result, config.markdown, _relative(results_file))
        print(f"wrote {config.markdown}")
    return 0


def _architecture(training: object, key: str) -> object:
    """One key of the model's architecture from its metadata's training record."""
    return training.get("model", {}).get(key) if isinstance(training, dict) else None


def _model(config: Config) -> model_store.ModelVersion:
    """The latest version of the configured model; the mobilenet profile's is trained
    first when the store has none."""
    try:
        return model_store.resolve(config.model_store, config.model_name)
    except ServiceError:
        profile = config.model_profile
        if profile.name == "demo" or config.model_name != profile.model_name:
            raise
    train = Path(sys.executable).parent / "mmserve-train"
    with tempfile.TemporaryDirectory(prefix="mmserve-bench-train-") as tmp:
        command = [
            str(train),
            *profile.train_args,
            "--model-store",
            str(config.model_store),
            "--demo-dir",
            str(Path(tmp) / "demo"),
        ]
        progress(
            f"no {config.model_name} in {config.model_store}: training it first "
            f"(about 2-5 minutes on 2 cores): {shlex.join(command)}"
        )
        subprocess.run(command, check=True, cwd=ROOT)
    return model_store.resolve(config.model_store, config.model_name)


def choose_generator(config: Config) -> tuple[closedloop.Generator, list[str]]:
    """The load generator (said on stderr), and the run's notes: empty, or the fallback to
    the Python generator."""
    generator, note = closedloop.choose(
        config.python_load, config.request_timeout_s, config.wrk_threads
    )
    progress(note)
    return generator, [] if generator.name == "wrk" else [note]


def body_sets(
    plan: Sequence[targets.Target], samples: Sequence[inputs.Sample], work: Path
) -> dict[str, closedloop.BodySet]:
    """The samples in each wire format the planned servers take, written under ``work``."""
    return {
        fmt: closedloop.body_set(fmt, [ENCODERS[fmt](s) for s in samples], work / fmt)
        for fmt in {t.body_format for t in plan}
    }


def plan_targets(
    config: Config, version_path: Path, notes: list[str]
) -> tuple[list[targets.Target], list[peer_envs.PeerEnv]]:
    """The servers to drive, in order, and the peer venvs they use."""
    plan: list[targets.Target] = []
    workers: list[int | None] = list(config.workers) if config.workers else [None]
    for w in workers if "service" not in config.skip else []:
        name = SERVICE if w is None else f"{SERVICE} w{w}"
        plan.append(
            targets.service(config.model_store, config.model_name, config.server_args, w, name)
        )
    if "floor" not in config.skip:
        plan.append(targets.floor())
    if "naive" not in config.skip:
        plan.append(targets.naive(version_path))
    peers = []
    for name in config.peers:
        env = peer_envs.ensure(name, progress)
        if env is None:
            notes.append(f"{name}: skipped (its venv could not be created)")
            continue
        if env.mismatches():
            notes.append(f"{name}: versions differ from the service's: {env.mismatches()}")
        peers.append(env)
        plan.append(getattr(targets, name)(env, version_path))
    return plan, peers


def _inprocess(config: Config, work: Path) -> inprocess.InProcessResult:
    progress("in-process: measuring")
    return inprocess.run_isolated(
        config.model_store,
        config.model_name,
        images=config.images,
        image_side=config.image_side,
        repetitions=config.repetitions,
        duration_s=config.inprocess_duration_s,
        warmup_s=config.warmup_s,
        log_file=work / "inprocess.log",
        # Loading takes as long as a server's start; then a generous second per call.
        timeout_s=config.start_timeout_s
        + 4 * (config.warmup_s + config.inprocess_duration_s)
        + config.repetitions,
    )


def _write_json(result: BenchReport, folder: Path, started: datetime) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stem}.json"
    n = 1
    while path.exists():
        path = folder / f"{stem}-{n}.json"
        n += 1
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def _mmserve_env() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("MMSERVE_")}


def _command_line(argv: list[str]) -> str:
    """The invocation, with the MMSERVE_* settings that shaped it, for copying."""
    env = [f"{k}={shlex.quote(v)}" for k, v in _mmserve_env().items()]
    return " ".join([*env, shlex.join(["python", "-m", "bench.run", *argv])])


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
