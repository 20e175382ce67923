"""Distributed KerasTuner search on one host: a chief and one worker per visible GPU.

    KERAS_BACKEND=jax python scripts/launch_tuning.py --output-dir runs/tune/nth-8gpu \\
        --task nth_farthest --tuner random --max-trials 32 --epochs 10

starts `examples/tune.py` (the flags after the launcher's own go to it unchanged) as

* one chief (`KERASTUNER_TUNER_ID=chief`, no GPU: it runs no trial, it serves the oracle over
  gRPC on `--ip`:`--port`), and
* one worker per GPU (`tuner0`, `tuner1`, ...), worker i with `CUDA_VISIBLE_DEVICES=<GPU i>`;

all sharing the search folder `--output-dir`. The GPUs are those of `CUDA_VISIBLE_DEVICES` if it is
set, else those `nvidia-smi -L` lists; `--gpus 0,1,2,3` picks them, `--workers N` starts N workers
(on the GPUs in turn, or on the CPU where none is visible or with `--gpus none`).

A worker that dies (non-zero exit or a signal) is started again with the same tuner ID, up to
`--max-restarts` times per worker: the oracle hands it the trial it was running, which is run
again from the start, and the search goes on. The launcher exits when the chief exits (with the
chief's exit status), after the workers; if every worker has failed for good it stops the chief
and exits with status 1.

Written into the search folder:

* `logs/chief.log`, `logs/tuner<i>.log`: each process's output (a restarted worker appends);
* `launcher.json`: the command, the processes (tuner ID, GPU, pid, restarts, exit codes), and
  at the end the wall time, completed trials, trials per hour and the best validation figure
  (from the chief's `best_trials.json`), with the host's GPUs and the versions used.

Run it again with the same command to resume a stopped search (KerasTuner reloads the oracle);
`--overwrite` deletes the search folder first.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNE_SCRIPT = os.path.join(REPO, "examples", "tune.py")
SUMMARY_FILE = "launcher.json"
LOG_FOLDER = "logs"


def build_parser():
    """The launcher's own flags; the others are passed to `examples/tune.py`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", required=True, help="The search folder shared by all processes."
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Workers to start (default: one per visible GPU).",
    )
    parser.add_argument(
        "--gpus",
        default="auto",
        help="Comma-separated GPU ids for the workers, 'none' for the CPU (default auto: "
        "CUDA_VISIBLE_DEVICES, else nvidia-smi).",
    )
    parser.add_argument(
        "--max-restarts", type=int, default=3, help="Restarts of one worker before giving up."
    )
    parser.add_argument("--ip", default="127.0.0.1", help="Address the chief's oracle serves.")
    parser.add_argument("--port", type=int, default=None, help="Oracle port (default: a free one).")
    parser.add_argument(
        "--overwrite", action="store_true", help="Delete the search folder and start over."
    )
    parser.add_argument(
        "--script", default=TUNE_SCRIPT, help="The search script (default examples/tune.py)."
    )
    return parser


def visible_gpus(spec="auto"):
    """GPU ids for the workers: from `spec`, `CUDA_VISIBLE_DEVICES` or `nvidia-smi -L`."""
    if spec != "auto":
        return [] if spec.strip().lower() in ("", "none") else _split(spec)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return _split(os.environ["CUDA_VISIBLE_DEVICES"])
    return [str(i) for i in range(len(_nvidia_smi("-L")))]


def _split(text):
    return [item.strip() for item in text.split(",") if item.strip() and item.strip() != "-1"]


def _nvidia_smi(*args):
    """The lines nvidia-smi prints for `args`, or [] where it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _versions():
    out = {"python": sys.version.split()[0]}
    for name in ("keras", "keras-tuner", "jax", "jaxlib", "torch", "tensorflow", "keras-stm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class Process:
    """One chief or worker: its tuner ID, GPU, log, subprocess and restarts."""

    def __init__(self, tuner_id, gpu, command, env, log_path):
        self.tuner_id = tuner_id
        self.gpu = gpu
        self.command = command
        self.env = env
        self.log_path = log_path
        self.popen = None
        self.pids = []
        self.exit_codes = []
        self.restarts = 0
        self.state = "new"  # running, done, failed

    def start(self):
        with open(self.log_path, "a") as log:
            log.write(f"\n=== launcher: starting {self.tuner_id} at {time.ctime()} ===\n")
            log.flush()
            self.popen = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids.append(self.popen.pid)
        self.state = "running"

    def poll(self):
        """The exit status once the process has ended (recorded once), else None."""
        if self.state != "running":
            return None
        code = self.popen.poll()
        if code is not None:
            self.exit_codes.append(code)
            self.state = "done" if code == 0 else "failed"
        return code

    def stop(self, grace=10.0):
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.exit_codes.append(self.popen.returncode)
        self.state = "stopped"

    def record(self):
        return {
            "tuner_id": self.tuner_id,
            "gpu": self.gpu,
            "pid": self.popen.pid if self.popen else None,
            "pids": self.pids,
            "state": self.state,
            "restarts": self.restarts,
            "exit_codes": self.exit_codes,
            "log": os.path.relpath(self.log_path, os.path.dirname(os.path.dirname(self.log_path))),
        }


def _search_results(output_dir):
    """Completed trials and the best figure of the search folder (the chief's files)."""
    completed = 0
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                completed += json.load(f).get("status") == "COMPLETED"
    out = {"num_completed": completed, "best_score": None, "objective": None}
    path = os.path.join(output_dir, "best_trials.json")
    if os.path.exists(path):
        with open(path) as f:
            best = json.load(f)
        out["objective"] = best["objective"]
        out["best_score"] = best["best_trials"][0]["score"] if best["best_trials"] else None
        out["best_trial_id"] = best["best_trials"][0]["trial_id"] if best["best_trials"] else None
        out["task"] = best.get("task")
        out["model"] = best.get("model")
    return out


def main(argv=None):
    """Runs the search; returns the launcher's exit status."""
    parser = build_parser()
    args, passed = parser.parse_known_args(argv)
    if passed and passed[0] == "--":
        passed = passed[1:]
    if args.max_restarts < 0:
        parser.error(f"--max-restarts must be >= 0, got {args.max_restarts}")
    gpus = visible_gpus(args.gpus)
    workers = args.workers if args.workers is not None else len(gpus)
    if workers <= 0:
        parser.error("no GPU is visible: give --workers N to run N workers on the CPU")
    output_dir = os.path.abspath(args.output_dir)
    if args.overwrite and os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    logs = os.path.join(output_dir, LOG_FOLDER)
    os.makedirs(logs, exist_ok=True)
    port = args.port or _free_port(args.ip)
    command = [sys.executable, args.script, "--output-dir", output_dir, *passed]
    base_env = dict(
        os.environ,
        KERASTUNER_ORACLE_IP=args.ip,
        KERASTUNER_ORACLE_PORT=str(port),
        PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
    )

    def make(tuner_id, gpu):
        env = dict(base_env, KERASTUNER_TUNER_ID=tuner_id, CUDA_VISIBLE_DEVICES=gpu or "")
        return Process(tuner_id, gpu, command, env, os.path.join(logs, f"{tuner_id}.log"))

    chief = make("chief", None)
    pool = [make(f"tuner{i}", gpus[i % len(gpus)] if gpus else None) for i in range(workers)]
    summary_path = os.path.join(output_dir, SUMMARY_FILE)
    summary = {
        "command": [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:])],
        "tune_command": command,
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "host": socket.gethostname(),
        "gpus": _nvidia_smi("--query-gpu=name,memory.total", "--format=csv,noheader"),
        "workers": workers,
        "max_restarts": args.max_restarts,
        "oracle": f"{args.ip}:{port}",
        "versions": _versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def write(extra=None):
        summary.update(extra or {})
        summary["processes"] = [p.record() for p in [chief, *pool]]
        with open(summary_path + ".tmp", "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(summary_path + ".tmp", summary_path)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    start = time.time()
    status = 1
    try:
        chief.start()
        for worker in pool:
            worker.start()
        write()
        print(f"launcher: chief and {workers} workers on {summary['oracle']}; logs in {logs}")
        while True:
            time.sleep(0.5)
            changed = False
            for worker in pool:
                code = worker.poll()
                if code is None or code == 0:
                    changed |= code == 0
                    continue
                changed = True
                if worker.restarts < args.max_restarts:
                    worker.restarts += 1
                    print(f"launcher: {worker.tuner_id} exited {code}; restart {worker.restarts}")
                    worker.start()
                else:
                    print(f"launcher: {worker.tuner_id} exited {code}; no restart left")
            code = chief.poll()
            if code is not None:
                status = code
                print(f"launcher: chief exited {code}")
                break
            if all(w.state == "failed" for w in pool):
                print("launcher: every worker failed; stopping the chief")
                status = 1
                break
            if changed:
                write()
    except KeyboardInterrupt:
        print("launcher: interrupted; stopping the processes")
        status = 130
    finally:
        deadline = time.time() + 30
        for worker in pool:  # after the chief, workers have no trial left: let them exit
            while worker.poll() is None and worker.state == "running" and time.time() < deadline:
                time.sleep(0.2)
        for process in [*pool, chief]:
            process.stop()
    wall = time.time() - start
    results = _search_results(output_dir)
    write(
        {
            "exit_status": status,
            "wall_seconds": round(wall, 1),
            "num_completed": results.pop("num_completed"),
            **results,
        }
    )
    summary["trials_per_hour"] = round(summary["num_completed"] * 3600.0 / wall, 2)
    write()
    print(
        f"launcher: {summary['num_completed']} trials in {wall:.0f} s "
        f"({summary['trials_per_hour']} per hour); best {summary.get('best_score')}; "
        f"summary in {summary_path}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
