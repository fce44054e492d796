"""Measure the streaming data pipeline: memory and start-up by dataset size, and tokens/s.

    python tools/bench_data.py scale [--tokens 25e6,250e6,2.5e9] [--datasets DIR,...] [--workdir DIR]
    python tools/bench_data.py throughput [--tokenizer byte,smollm2,MODEL_DIR] [--workers 0,1,2,4,8]
        [--threads 1,2,4] [--data-threads 1,2] [--no-encoder] [--seconds 20] [--windows 1]
        [--seeded-tokens 25e6] [--text-dir DIR] [--json OUT.json]
    python tools/bench_data.py train-wait examples/run.yaml [--steps N]
    python tools/bench_data.py first-batch --uri DATASET [--batches 200]     (one child measurement)

``scale`` seeds text datasets of about the given numbers of byte tokens (tools/seed_dataset.py,
one shard per 250M tokens) and, for each, runs ``first-batch`` in a fresh process twice: with an
empty index cache (the line index is built) and with it cached. A child reports its peak RSS
(``ru_maxrss``), the RSS after its imports (the interpreter, NumPy...), the seconds to the first
batch and the RSS after ``--batches`` batches (batch 8 x 2048 tokens, packing on).

``throughput`` reports, for each tokenizer (``byte``; ``smollm2``: the Hugging Face tokenizer in
.cache/smollm2, ``make smollm2``; or any directory holding a ``tokenizer.json``) on a seeded text
dataset, and on ``--text-dir`` files (real English text) when given:
  * the encoder alone: tokens per CPU-second of ``tokenizer.encode`` over the dataset's first
    records (a Hugging Face tokenizer: its fast path, tiktoken, and the ``tokenizers`` library's
    batch encode), and tokens/s of the fast path in ``--threads`` threads of one process;
  * one core: tokens per CPU-second of reading, parsing and tokenizing chunks in this process
    (what one worker process does);
  * the pipeline with ``workers`` processes (0: a thread of this process): tokens/s served to a
    consumer that takes batches as fast as it can, wall and CPU (this process and its workers).
``train-wait`` trains a run config in this process and reports the share of the training loop's
wall time spent in ``next(batches)`` (the first batch, which starts the pipeline, reported apart).
Each row is printed as a JSON line; ``--json`` also writes them all, with the machine (cores, load
average before and after), to a file. Figures go to docs/PERFORMANCE.md with the machine and load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPE = {"batch_size": 8, "seq_len": 2048}
TOKENS_PER_SHARD = 250_000_000


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- scale ---------------------------------------------------------------------------------------------


def seed_text(directory: Path, tokens: float) -> tuple[Path, int]:
    """A seeded text dataset of about ``tokens`` byte tokens (written once, reused)."""
    from tools.seed_dataset import generate, seed_dataset

    sample = generate("text", 2000, 0)
    per_record = (len(sample) - 2000 * len('{"text": ""}\n')) / 2000 + 2  # text bytes + bos + eos
    count = math.ceil(tokens / per_record)
    shards = max(1, round(tokens / TOKENS_PER_SHARD))
    out = directory / f"text-{tokens:.0e}".replace("+", "")
    if not (out / "data.jsonl.manifest.json").exists():
        started = time.perf_counter()
        seed_dataset("text", count, 0, str(out / "data.jsonl"), shards=shards)
        print(
            f"seeded {count} records in {shards} shards in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    return out, count


def first_batch(uri: str, batches: int) -> dict[str, Any]:
    """Seconds and memory to the first batch of ``uri`` (and RSS after ``batches`` batches)."""
    base = _rss_mib()
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator
    from tunix_trainer.tokenizer import ByteTokenizer

    imported = _rss_mib()
    started = time.perf_counter()
    data = BatchIterator(DatasetSpec(uri=uri), ByteTokenizer(), seed=0, **SHAPE)
    next(data)
    first = time.perf_counter() - started
    for _ in range(batches - 1):
        next(data)
    after = _rss_mib()
    data.close()
    return {
        "records": data.num_records,
        "shards": len(data.source.shards),
        "seconds_to_first_batch": round(first, 2),
        "rss_before_imports_mib": round(base, 1),
        "rss_after_imports_mib": round(imported, 1),
        "rss_after_batches_mib": round(after, 1),
        "peak_rss_mib": round(_peak_mib(), 1),
        "batches": batches,
    }


def scale(sizes: list[float], workdir: Path, batches: int, datasets: list[str]) -> list[dict[str, Any]]:
    results = []
    targets = [(tokens, seed_text(workdir, tokens)[0]) for tokens in sizes]
    targets += [(None, Path(uri)) for uri in datasets]
    for tokens, directory in targets:
        cache = Path(tempfile.mkdtemp(prefix="index-", dir=workdir))
        for cached in (False, True):
            env = {**os.environ, "TUNIX_DATA_CACHE": str(cache)}
            out = subprocess.run(
                [sys.executable, __file__, "first-batch", "--uri", str(directory), "--batches", str(batches)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            row = {
                "tokens": tokens,
                "dataset": str(directory),
                "index_cached": cached,
                **json.loads(out.stdout),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


# --- throughput ----------------------------------------------------------------------------------------


def load_tokenizer(name: str) -> Any:
    """``byte``, ``smollm2`` (.cache/smollm2) or a directory holding a tokenizer.json."""
    if name == "byte":
        from tunix_trainer.tokenizer import ByteTokenizer

        return ByteTokenizer()
    from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
    from tunix_trainer.pretrained.source import ModelFiles

    return load_hf_tokenizer(ModelFiles(str(REPO / ".cache" / "smollm2" if name == "smollm2" else name)))


def text_dir_dataset(text_dir: str, out: Path) -> Path:
    """The files under ``text_dir`` (UTF-8 text) as a JSONL text dataset, one file per record."""
    with out.open("w", encoding="utf-8") as f:
        for path in sorted(Path(text_dir).rglob("*")):
            try:
                text = path.read_text(encoding="utf-8") if path.is_file() else ""
            except (UnicodeDecodeError, OSError):
                continue
            if text.strip():
                f.write(json.dumps({"text": text}) + "\n")
    return out


def _texts(uri: str, tokenizer: Any, chars: int = 20_000_000) -> list[str]:
    """The texts of the dataset's first records, about ``chars`` characters in all."""
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator

    data = BatchIterator(DatasetSpec(uri=uri), tokenizer, seed=0, **SHAPE)
    source, texts, total = data._stream.reader.source, [], 0
    for i in range(len(source)):
        texts += [text for text in source[i] if text]
        total += sum(map(len, source[i]))
        if total >= chars:
            break
    data.close()
    return texts


def _rate(encode: Any, texts: list[str], seconds: float) -> float:
    """Tokens per CPU-second of ``encode(texts) -> token lists``, repeated for ``seconds``."""
    tokens, started = 0, time.process_time()
    while True:
        tokens += sum(map(len, encode(texts)))
        if time.process_time() - started >= seconds:
            return tokens / (time.process_time() - started)


def _threaded(encode: Any, texts: list[str], threads: int, seconds: float) -> dict[str, float]:
    """Tokens/s (wall) and per CPU-second of ``encode`` on ``texts`` shared out to ``threads`` threads."""
    import concurrent.futures

    shares = [texts[k::threads] for k in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        tokens, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall0 < seconds:
            tokens += sum(pool.map(lambda share: sum(len(encode(t)) for t in share), shares))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"tokens_per_second": round(tokens / wall), "tokens_per_cpu_second": round(tokens / cpu)}


def encoder_alone(uri: str, tokenizer: Any, seconds: float, threads: list[int]) -> dict[str, Any]:
    """The encoder's tokens per CPU-second (fast path and library apart), and in threads."""
    texts = _texts(uri, tokenizer)
    row: dict[str, Any] = {"encoder_texts": len(texts), "encoder_chars": sum(map(len, texts))}
    row["encoder_tokens_per_cpu_second"] = round(
        _rate(lambda ts: [tokenizer.encode(t) for t in ts], texts, seconds)
    )
    library = getattr(tokenizer, "_tok", None)
    if library is not None:
        row["fast_path"] = getattr(tokenizer, "_fast", None) is not None
        row["library_tokens_per_cpu_second"] = round(
            _rate(
                lambda ts: [e.ids for e in library.encode_batch_fast(ts, add_special_tokens=False)],
                texts,
                seconds,
            )
        )
    for n in threads:
        row[f"encoder_threads_{n}"] = _threaded(tokenizer.encode, texts, n, seconds)
    return row


def one_core(uri: str, tokenizer: Any, seconds: float, windows: int = 1) -> list[float]:
    """Tokens per CPU-second of reading + parsing + tokenizing chunks in this process, in each of
    ``windows`` windows of ``seconds / windows`` CPU-seconds."""
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator
    from tunix_trainer.data_stream import ChunkReader

    data = BatchIterator(DatasetSpec(uri=uri), tokenizer, seed=0, **SHAPE)
    reader: ChunkReader = data._stream.reader
    reader(0, 0)  # warm: open files
    rates, chunk = [], 1
    for _ in range(windows):
        tokens, started = 0, time.process_time()
        while time.process_time() - started < seconds / windows:
            tokens += reader(chunk % len(reader.lanes), chunk // len(reader.lanes)).tokens.size
            chunk += 1
        rates.append(tokens / (time.process_time() - started))
    return rates


def spread(rates: list[float], key: str) -> dict[str, Any]:
    """``{key: median}``, with the best window and all of them when there are several."""
    ordered = sorted(rates)
    row: dict[str, Any] = {key: round(ordered[len(ordered) // 2])}
    if len(rates) > 1:
        row[f"{key}_best"] = round(ordered[-1])
        row[f"{key}_windows"] = [round(r) for r in rates]
    return row


def _child_pids() -> set[int]:
    """The pids of this process's children (and theirs) now."""
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def _cpu_seconds(others: frozenset[int] = frozenset()) -> tuple[float, float]:
    """(CPU seconds of this process, of its worker processes), user + system; ``others``: child
    pids that were there before the pipeline started (a test harness's servers), not counted."""
    import psutil

    me = psutil.Process()
    workers = 0.0
    for child in me.children(recursive=True):
        if child.pid in others:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            workers += sum(child.cpu_times()[:2])
    return sum(me.cpu_times()[:2]), workers


def pipeline(
    uri: str, tokenizer: Any, workers: int, seconds: float, threads: int = 1, windows: int = 1
) -> dict[str, Any]:
    """Tokens/s the pipeline serves to a consumer that only takes batches (``threads``: of the
    in-process path, workers 0), over ``windows`` windows of ``seconds / windows`` (the median window
    and, with several, the best one and all)."""
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator

    others = frozenset(_child_pids())
    data = BatchIterator(DatasetSpec(uri=uri), tokenizer, seed=0, workers=workers, threads=threads, **SHAPE)
    walls, cpus, trainer, helper = [], [], 0.0, 0.0
    total = 0
    try:
        started = time.perf_counter()
        next(data)
        startup = time.perf_counter() - started
        for _ in range(3):
            next(data)
        for _ in range(windows):
            (main0, workers0), wall0, served = _cpu_seconds(others), time.perf_counter(), 0
            while time.perf_counter() - wall0 < seconds / windows:
                served += next(data).inputs.size
            (main1, workers1), wall = _cpu_seconds(others), time.perf_counter() - wall0
            walls.append(served / wall)
            cpus.append(served / (main1 - main0 + workers1 - workers0))
            trainer, helper, total = trainer + main1 - main0, helper + workers1 - workers0, total + served
    finally:
        data.close()
    return {
        **spread(walls, "tokens_per_second"),
        **spread(cpus, "tokens_per_cpu_second"),
        "trainer_cpu_seconds_per_m_tokens": round(trainer / total * 1e6, 3),
        "worker_cpu_seconds_per_m_tokens": round(helper / total * 1e6, 3),
        "first_batch_seconds": round(startup, 2),
    }


def throughput(
    tokenizers: list[str],
    workers: list[int],
    threads: list[int],
    seconds: float,
    workdir: Path,
    text_dir: str | None,
    seeded_tokens: float,
    data_threads: list[int] | None = None,
    no_encoder: bool = False,
    windows: int = 1,
) -> list[dict[str, Any]]:
    datasets = {"seeded": seed_text(workdir, seeded_tokens)[0]}
    if text_dir:
        datasets["text-dir"] = text_dir_dataset(text_dir, workdir / "text-dir.jsonl")
    rows = []

    def emit(row: dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)
        rows.append(row)

    for name in tokenizers:
        tokenizer = load_tokenizer(name)
        for label, uri in datasets.items():
            if not no_encoder:
                emit(
                    {
                        "tokenizer": name,
                        "dataset": label,
                        **encoder_alone(str(uri), tokenizer, seconds, threads),
                    }
                )
            one = one_core(str(uri), tokenizer, seconds, windows)
            emit({"tokenizer": name, "dataset": label, **spread(one, "one_core_tokens_per_cpu_second")})
            for n in workers:
                for k in (data_threads or [1]) if n == 0 else [1]:
                    emit(
                        {
                            "tokenizer": name,
                            "dataset": label,
                            "workers": n,
                            **({"threads": k} if n == 0 else {}),
                            **pipeline(str(uri), tokenizer, n, seconds, k, windows),
                        }
                    )
    return rows


# --- data wait in training ------------------------------------------------------------------------------


class TimedData:
    """The loop's batches with the time its ``next`` waits on them counted."""

    def __init__(self, data: Any):
        self.data = data
        self.wait = 0.0
        self.first = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)

    def __iter__(self) -> TimedData:
        return self

    def __next__(self) -> Any:
        started = time.perf_counter()
        batch = next(self.data)
        waited = time.perf_counter() - started
        if self.calls == 0:
            self.first = waited
        else:
            self.wait += waited
        self.calls += 1
        return batch


def train_wait(config: str, workdir: Path, steps: int | None) -> dict[str, Any]:
    """Train ``config`` in this process (``tunix-rt run --local`` without the display) and report the
    share of the loop's wall time spent waiting for batches (the first batch apart)."""
    from tunix_trainer.cli import with_steps
    from tunix_trainer.config import load_run
    from tunix_trainer.loop import setup_train_loop

    run = with_steps(load_run(config, base_dir=os.getcwd()), steps)
    out = Path(tempfile.mkdtemp(prefix="train-wait-", dir=workdir))
    setup = setup_train_loop(
        run, artifacts_uri=str(out), checkpoint_uri=str(out / "checkpoints"), resume="none"
    )
    timed = TimedData(setup.loop.data)
    setup.loop.data = timed
    started = time.perf_counter()
    try:
        summary = setup.loop.run(setup.state, setup.provenance)
    finally:
        timed.data.close()
        setup.checkpointer.close()
    wall = time.perf_counter() - started
    return {
        "config": config,
        "steps": run.spec.training.steps,
        "loop_seconds": round(wall, 2),
        "first_batch_seconds": round(timed.first, 3),
        "data_wait_seconds": round(timed.wait, 3),
        "data_wait_share": round(timed.wait / max(wall - timed.first, 1e-9), 5),
        "final_loss": summary.get("final_loss", summary.get("finalLoss")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--tokens", default="25e6,250e6,2.5e9", help="seeded sizes ('' for none)")
    s.add_argument("--datasets", default="", help="existing datasets to measure too (comma-separated)")
    s.add_argument("--batches", type=int, default=200)
    t = sub.add_parser("throughput")
    t.add_argument(
        "--tokenizer", default="byte,smollm2", help="byte, smollm2 or a directory with tokenizer.json"
    )
    t.add_argument("--workers", default="0,1,2", help="pipeline worker processes to measure")
    t.add_argument("--threads", default="1,2", help="threads of one process running the encoder alone")
    t.add_argument("--data-threads", default="", help="threads of the in-process path (workers 0) to measure")
    t.add_argument("--no-encoder", action="store_true", help="skip the encoder-alone rows")
    t.add_argument("--seconds", type=float, default=20.0)
    t.add_argument(
        "--windows", type=int, default=1, help="split each one-core and pipeline measure into N windows "
        "and report the median and the best (on a shared machine the best window is the least disturbed)"
    )  # fmt: skip
    t.add_argument(
        "--seeded-tokens", type=float, default=25e6, help="size of the seeded dataset (byte tokens)"
    )
    t.add_argument("--text-dir", default=None, help="a directory of UTF-8 text files (real text)")
    t.add_argument("--json", default=None, help="also write every row, with the machine, to this file")
    for p in (s, t):
        p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tunix-bench-data"))
    w = sub.add_parser("train-wait")
    w.add_argument("config", help="a TunixRun YAML (examples/run.yaml, examples/finetune-smollm2.yaml)")
    w.add_argument("--steps", type=int, default=None)
    w.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tunix-bench-data"))
    f = sub.add_parser("first-batch")
    f.add_argument("--uri", required=True)
    f.add_argument("--batches", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "first-batch":
        print(json.dumps(first_batch(args.uri, args.batches)))
        return 0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.command == "train-wait":
        print(json.dumps(train_wait(args.config, workdir, args.steps)))
    elif args.command == "scale":
        sizes = [float(x) for x in args.tokens.split(",") if x]
        scale(sizes, workdir, args.batches, [x for x in args.datasets.split(",") if x])
    else:
        load = os.getloadavg()
        rows = throughput(
            args.tokenizer.split(","),
            [int(x) for x in args.workers.split(",") if x],
            [int(x) for x in args.threads.split(",") if x],
            args.seconds,
            workdir,
            args.text_dir,
            args.seeded_tokens,
            [int(x) for x in args.data_threads.split(",") if x],
            args.no_encoder,
            args.windows,
        )
        if args.json:
            machine = {"cpus": os.cpu_count(), "load_before": load, "load_after": os.getloadavg()}
            Path(args.json).write_text(
                json.dumps({"argv": sys.argv, "machine": machine, "rows": rows}, indent=1)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
