"""The benchmark sweep's case parsing and config, the profile summary's bookkeeping, and the API server
profile's classes."""

from __future__ import annotations

import pytest

from tools import apiserver_profile
from tools.bench_sweep import case_config, parse_case, table_row
from tools.profile_summary import Totals, kernel_class
from tunix_trainer.config import parse_run


def test_parse_case_reads_shape_options_and_environment():
    case = parse_case("350m:b64:t2048:accum=2:ckpt=5:profile=1:XLA_FLAGS=--a=b")
    assert (case.preset, case.batch, case.seq, case.accum) == ("350m", 64, 2048, 2)
    assert case.checkpoint_saves == 5 and case.profile
    assert case.env == {"XLA_FLAGS": "--a=b"}
    assert case.slug == "350m_b64_t2048_accum_2_ckpt_5_profile_1_XLA_FLAGS_--a_b"
    for bad in ("125m", "125m:32:t1024", "125m:b32:t1024:ckpt", "125m:b32:t1024:remat=full"):
        with pytest.raises(SystemExit):
            parse_case(bad)


def test_case_config_is_a_valid_benchmark_run_with_the_case_applied():
    run = parse_run(case_config(parse_case("1b:b8:t2048:accum=2"), "cpu"))
    assert run.spec.mode.value == "Benchmark"
    assert run.spec.model.preset.value == "1b" and run.spec.device.kind.value == "cpu"
    training = run.spec.training
    assert (training.batch_size, training.seq_len, training.grad_accum_steps) == (8, 2048, 2)


def test_table_row_formats_results_and_failures():
    bench = {
        "compileSeconds": 9.44,
        "stepTime": {"p50Ms": 63.754},
        "steadyState": {"stepTimeMs": 62.5},
        "tokensPerSecond": 524294.2,
        "mfu": 0.4233,
        "peakMemoryBytes": 16.8 * 2**30,
        "checkpoint": {"amortizedOverheadPercent": 0.0939},
    }
    row = table_row({"case": "125m:b32:t1024", "exitCode": 0, "benchmark": bench})
    assert row == "| 125m:b32:t1024 | 9.4 | 63.75 | 62.50 | 524,294 | 42.3% | 16.8 GiB | 0.094 | - |"
    bench["trainState"] = {"optimizerBytes": 19.5 * 2**20}  # the optimizer state's size (LoRA cases)
    row = table_row({"case": "smollm2:b16:t2048:lora=16", "exitCode": 0, "benchmark": bench})
    assert row.endswith("| 0.094 | 19.5 MiB |")
    assert "exit 5" in table_row({"case": "x:b1:t8", "exitCode": 5})


def test_kernel_classes_and_totals():
    attention = "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16"
    assert kernel_class(attention) == "attention (cuDNN/flash)"
    assert kernel_class("nvjet_sm90_tst_128x160_64x5_2x1_v_bz_NNT") == "GEMM"
    assert kernel_class("gemm_fusion_dot_294") == "GEMM"
    assert kernel_class("input_reduce_fusion_51") == "reduction fusion"
    assert kernel_class("loop_add_fusion") == "elementwise fusion"
    assert kernel_class("something_else") == "other"
    totals = Totals()
    for name, ns in (("a", 5.0), ("b", 1.0), ("a", 2.0), ("c", 3.0)):
        totals.add(name, ns)
    assert totals.total == 11.0
    assert totals.top(2) == [("a", 7.0, 2), ("c", 3.0, 1)]


RAW_PROFILE = """PeriodType: cpu nanoseconds
Period: 10000000
Samples:
samples/count cpu/nanoseconds
          3   30000000: 1 2 3
          1   10000000: 4 3
          2   20000000: 5
Locations
     1: 0x10 M=1 github.com/google/cel-go/cel.(*prog).Eval cel/program.go:1:0 s=0
             k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel.(*Validator).Validate v.go:2:0 s=0
     2: 0x20 M=1 k8s.io/apiextensions-apiserver/pkg/registry/customresource.(*StatusREST).Update e.go:3:0 s=0
     3: 0x30 M=1 net/http.(*conn).serve server.go:4:0 s=0
     4: 0x40 M=1 k8s.io/apiserver/pkg/storage/etcd3.(*watchChan).transform w.go:5:0 s=0
     5: 0x50 M=1 runtime.gcBgMarkWorker mgc.go:6:0 s=0
Mappings
1: 0x400000/0x38bc000/0x0 /bin/kube-apiserver abc [FN]
"""


def test_apiserver_profile_gives_each_sample_to_its_first_class_and_counts_inlined_frames():
    classes = apiserver_profile.classify(RAW_PROFILE)
    assert classes["total"] == 0.06
    assert classes["custom resource status write (TunixRun /status)"] == 0.03
    assert classes["watch: etcd events decoded"] == 0.01
    assert classes["Go garbage collector"] == 0.02
    assert "other" not in classes
    # CEL's frame is inlined into location 1 (the line under it): found all the same.
    assert classes["of which anywhere: CEL validation rules"] == 0.03
